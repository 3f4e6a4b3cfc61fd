"""The OpenFeature provider, by its short name: see ``unveil.sdk.openfeature``.

from unveil.openfeature import UnveilProvider
"""

from __future__ import annotations

from unveil.sdk.openfeature import UnveilProvider, context_of

__all__ = ["UnveilProvider", "context_of"]
