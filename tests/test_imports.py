"""Importing unveil stays light, and the layers keep their direction."""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in json.loads(out.stdout)}


HEAVY = {"click", "rich", "ruamel", "httpx", "starlette", "fastapi", "sqlalchemy", "uvicorn"}


def test_core_loads_nothing_heavy() -> None:
    assert not (_loaded_after("import unveil.core") & HEAVY)


def test_importing_unveil_for_evaluation_loads_nothing_heavy() -> None:
    assert not (_loaded_after("import unveil; unveil.Client") & HEAVY)
