"""unveil: deploy dark, release on purpose."""

from __future__ import annotations

from unveil.core import ErrorCode, Evaluation, InvalidDocument, Reason, UnveilError
from unveil.sdk import Client

__all__ = ["Client", "ErrorCode", "Evaluation", "InvalidDocument", "Reason", "UnveilError"]
__version__ = "0.1.0"
