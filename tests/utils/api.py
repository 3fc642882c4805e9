"""Checks on the API's answers."""

import httpx


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is an error in the API's one shape, with this status and code and a message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
