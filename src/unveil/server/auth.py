"""Who is calling: tokens in, principals out; roles checked per route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from unveil.service.access import AccessService, Principal

__all__ = ["Admin", "Anyone", "Denied", "Editor", "SdkKey", "Viewer", "principal", "role"]


class Denied(Exception):
    """A request refused before any use case ran: its status and why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


async def principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Whoever the request's token belongs to; 401 without a valid one."""
    if not authorization:
        raise Denied(401, "an Authorization header with a token is required")
    secret = authorization.removeprefix("Bearer ").strip()
    access: AccessService = request.app.state.services.access
    found = access.recall(secret) or await run_in_threadpool(access.authenticate, secret)
    if found is None:
        raise Denied(401, "the token is not valid")
    return found


def role(needed: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits admin tokens of ``needed`` or a stronger role."""

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.may(needed):
            raise Denied(403, f"this needs an admin token with the {needed} role")
        return who

    return check


async def sdk_key(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.kind != "sdk" or who.environment_id is None:
        raise Denied(403, "this needs an SDK key")
    return who


Anyone = Annotated[Principal, Depends(principal)]
Viewer = Annotated[Principal, Depends(role("viewer"))]
Editor = Annotated[Principal, Depends(role("editor"))]
Admin = Annotated[Principal, Depends(role("admin"))]
SdkKey = Annotated[Principal, Depends(sdk_key)]
