"""unveil: deploy dark, release on purpose.

``unveil.Client`` is loaded on first use, so that ``import unveil.core`` (the
pure evaluation core, used by the server too) never loads the SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unveil.core import ErrorCode, Evaluation, InvalidDocument, Reason, UnveilError

if TYPE_CHECKING:
    from unveil.sdk.client import Client

__all__ = ["Client", "ErrorCode", "Evaluation", "InvalidDocument", "Reason", "UnveilError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Client":
        from unveil.sdk.client import Client

        return Client
    raise AttributeError(f"module 'unveil' has no attribute {name!r}")
