"""The server's garbage-collector settings."""

from __future__ import annotations

import gc

from unveil.server.runtime import tune_garbage_collector


def test_start_up_objects_are_frozen_and_full_collections_are_rare() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (20_000, 50, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
