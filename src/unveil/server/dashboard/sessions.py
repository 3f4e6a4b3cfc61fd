"""The dashboard's cookie and CSRF checks, shared by the Guard and the pages."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import cookie_parser

from unveil.service.sessions import csrf_token

__all__ = [
    "COOKIE",
    "cookie_secret",
    "csrf_matches",
    "is_dashboard_page",
    "is_dashboard_write",
    "same_origin",
]

#: The session cookie's name.
COOKIE = "unveil_session"
_NOT_DASHBOARD = ("/api/", "/sdk/", "/ofrep/", "/metrics", "/health")
_WRITES = ("POST", "PUT", "PATCH", "DELETE")
#: Paths that take a form from someone not yet signed in.
SIGN_IN = "/login"


def is_dashboard_page(path: str) -> bool:
    """Whether a path is one of the dashboard's pages (its errors are pages too)."""
    return not path.startswith((*_NOT_DASHBOARD, "/static/", "/docs", "/openapi", "/redoc"))


def is_dashboard_write(method: str, path: str) -> bool:
    """Whether a request changes something through the dashboard (needs a session)."""
    return method in _WRITES and not path.startswith(_NOT_DASHBOARD) and path != SIGN_IN


def cookie_secret(header: str | None) -> str | None:
    """The session secret in a Cookie header, if there is one."""
    if not header:
        return None
    # read as browsers send it (name=value; ...): a cookie of another application on this
    # host that the strict reader refuses ("theme=dark mode") must not hide the session
    return cookie_parser(header).get(COOKIE) or None


def csrf_matches(secret: str, sent: str | None) -> bool:
    """Whether a form's CSRF token is the one of this session."""
    return sent is not None and hmac.compare_digest(csrf_token(secret), sent)


def same_origin(headers: Mapping[str, str]) -> bool:
    """False when the browser says the request comes from another site.

    Browsers send ``Origin`` on every form post; a request without it (curl,
    an old browser) is judged by the CSRF token alone.
    """
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = headers.get("host", "")
    return origin.split("://", 1)[-1] == host
