"""The signed widget identity's check: the HMAC the README shows sites how to compute, and its expiry."""

import hashlib
import hmac

import pytest

from serving.identity import IdentityExpired, IdentityRefused, SignedIdentity, sign, verify

SECRET = "site-secret-0123456789"
NOW = 1_800_000_000


def identity(**changes: object) -> SignedIdentity:
    fields = {"user_id": "c-1042", "email": "omar.singh0@example.com", "expires": NOW + 60}
    fields["hash"] = sign(SECRET, *fields.values())  # type: ignore[arg-type]
    return SignedIdentity.model_validate({**fields, **changes})


def test_the_hash_is_the_hmac_of_the_documented_string() -> None:
    expected = hmac.new(SECRET.encode(), f"c-1042|omar.singh0@example.com|{NOW + 60}".encode(), hashlib.sha256)
    assert identity().hash == expected.hexdigest()
    assert verify(identity(), SECRET, now=NOW).email == "omar.singh0@example.com"
    assert verify(identity(hash=identity().hash.upper()), SECRET, now=NOW).user_id == "c-1042"


@pytest.mark.parametrize(
    "changes",
    [{"user_id": "c-1043"}, {"email": "someone@example.com"}, {"expires": NOW + 3600}, {"hash": "0" * 64},
     {"user_id": "c|1042"}, {"hash": ""}],
)  # fmt: skip
def test_anything_changed_under_the_hash_is_refused(changes: dict) -> None:
    with pytest.raises(IdentityRefused):
        verify(identity(**changes), SECRET, now=NOW)


def test_an_expired_identity_and_one_without_a_configured_secret_are_refused() -> None:
    with pytest.raises(IdentityExpired):
        verify(identity(), SECRET, now=NOW + 60)
    with pytest.raises(IdentityRefused):
        verify(identity(), None, now=NOW)
    with pytest.raises(IdentityRefused):
        verify(identity(), "another-secret-0123456789", now=NOW)
