"""The dashboard: server-rendered pages for people who release without a terminal.

Jinja2 templates, one stylesheet and one small script, all served by the
server itself (no CDN, no build step). Pages read and change through the same
services as the API; the Guard authenticates a state-changing request from
its session cookie before its body is read, and every form carries the
session's CSRF token.
"""

from fastapi import APIRouter

from unveil.server.dashboard import deploys, experiments, governance, pages, releasing
from unveil.server.dashboard.pages import error_page
from unveil.server.dashboard.sessions import is_dashboard_page

__all__ = ["error_page", "is_dashboard_page", "router"]

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(releasing.router)
router.include_router(governance.router)
router.include_router(experiments.router)
router.include_router(deploys.router)
