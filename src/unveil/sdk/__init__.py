"""The Python client: local evaluation of flags."""

from __future__ import annotations

from unveil.sdk.client import Client

__all__ = ["Client"]
