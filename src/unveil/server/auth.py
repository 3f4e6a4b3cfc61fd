"""Who is calling: the Authorization header in, a principal out; roles checked per route.

The rules (what a token is, which role may do what) live in
``unveil.service.access``; this only connects them to FastAPI. The guard
(``unveil.server.guard``) authenticates every request to /api, /sdk and
/ofrep before its body is read and leaves the principal in the request's
state under ``PRINCIPAL``; ``principal`` takes it from there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from unveil.service.access import AccessService, Principal, bearer_secret
from unveil.service.errors import Unauthenticated

__all__ = [
    "PRINCIPAL",
    "Admin",
    "Anyone",
    "Deployer",
    "Editor",
    "Releaser",
    "Role",
    "SdkKey",
    "Viewer",
    "principal",
]

#: Where the guard leaves the authenticated principal in the request's state.
PRINCIPAL = "principal"


async def principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Whoever the request's token belongs to; 401 without a valid one."""
    known: Principal | None = getattr(request.state, PRINCIPAL, None)
    if known is not None:  # the guard authenticated it before the body was read
        return known
    secret = bearer_secret(authorization)
    access: AccessService = request.app.state.services.access
    found = access.recall(secret) or await run_in_threadpool(access.authenticate, secret)
    if found is None:
        raise Unauthenticated("the token is not valid")
    return found


class Role:
    """A dependency that admits admin tokens of ``needed`` or a stronger role.

    An object rather than a closure so that the role a route asks for can be read
    back (the guard refuses the largest bodies by the same roles).
    """

    def __init__(self, needed: str) -> None:
        self.needed = needed

    async def __call__(self, who: Annotated[Principal, Depends(principal)]) -> Principal:
        return who.require(self.needed)


async def sdk_key(who: Annotated[Principal, Depends(principal)]) -> Principal:
    return who.require_sdk_key()


Anyone = Annotated[Principal, Depends(principal)]
Viewer = Annotated[Principal, Depends(Role("viewer"))]
Editor = Annotated[Principal, Depends(Role("editor"))]
Releaser = Annotated[Principal, Depends(Role("releaser"))]
Admin = Annotated[Principal, Depends(Role("admin"))]
#: a deployer token (CI), or an editor or stronger
Deployer = Annotated[Principal, Depends(Role("deployer"))]
SdkKey = Annotated[Principal, Depends(sdk_key)]
