"""Signed customer identity: the embedding site vouches for its logged-in customer, as Chatwoot and Intercom do.

The site computes `hex(HMAC-SHA256(secret, "<user_id>|<email>|<expires>"))` on its server and puts it on the
widget's script tag; a conversation opened with a valid, unexpired signature belongs to that customer.
"""

import hashlib
import hmac
import re
import time
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Neither may hold "|", so the signed string splits one way only.
USER_ID = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}")
EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+")


class SignedIdentity(BaseModel):
    """What the widget passes from the script tag's data-user-* attributes."""

    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, Field(max_length=128)]
    email: Annotated[str, Field(max_length=254)]
    expires: int
    """Unix time (seconds) after which the signature is no longer accepted."""
    hash: Annotated[str, Field(max_length=128)]


class IdentityRefused(Exception):
    """The signature does not match (or signed identities are off); deliberately says nothing more."""

    code = "identity_refused"


class IdentityExpired(Exception):
    """The signature is right but its expiry has passed: the site must sign a fresh one."""

    code = "identity_expired"


def signed_string(user_id: str, email: str, expires: int) -> str:
    return f"{user_id}|{email}|{expires}"


def sign(secret: str, user_id: str, email: str, expires: int) -> str:
    """The hash a site computes; the README shows the same in Python and Node."""
    message = signed_string(user_id, email, expires).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(identity: SignedIdentity, secret: str | None, now: float | None = None) -> SignedIdentity:
    """The identity when its signature is right and unexpired; raises IdentityRefused or IdentityExpired."""
    if not secret or not USER_ID.fullmatch(identity.user_id) or not EMAIL.fullmatch(identity.email):
        raise IdentityRefused
    expected = sign(secret, identity.user_id, identity.email, identity.expires)
    if not hmac.compare_digest(expected, identity.hash.strip().lower()):
        raise IdentityRefused
    if identity.expires <= (time.time() if now is None else now):
        raise IdentityExpired
    return identity
