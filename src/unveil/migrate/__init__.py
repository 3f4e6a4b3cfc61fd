"""Bringing flags over from other systems, with every user kept where they were."""

from __future__ import annotations

from unveil.migrate.unleash import Imported, ImportRefused, import_unleash, unleash_context

__all__ = ["ImportRefused", "Imported", "import_unleash", "unleash_context"]
