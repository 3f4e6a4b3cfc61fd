"""Importing unveil stays light: every module loaded is one we allow (issue 9, 4).

Each statement runs in a fresh interpreter; every module it loads beyond a
bare interpreter's must be in the standard library or named here. A new
dependency of the core or the client fails this test until it is added
here on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Evaluation: the core, and the two compiled helpers it needs.
CORE = {
    "unveil",
    "unveil.core",
    "unveil.core.bucketing",
    "unveil.core.codec",
    "unveil.core.compiler",
    "unveil.core.errors",
    "unveil.core.evaluation",
    "unveil.core.incremental",
    "unveil.core.model",
    "unveil.core.operators",
    "unveil.core.ruleset",
    "unveil.core.semver",
    "unveil.core.timestamps",
    "mmh3",
    "re2",
    "re2._re2",
}
# The client class: the offline client and its events; the network code waits for a live client.
CLIENT = CORE | {
    "unveil.sdk",
    "unveil.sdk.client",
    "unveil.sdk.events",
    "unveil.core.patch",
    "unveil.core.logbuckets",
    "unveil.sdk.timing",
    "unveil.sdk.experiment",
}


def _loaded(statement: str, blocked: str = "") -> set[str]:
    """The modules ``statement`` loads in a fresh interpreter, beyond what starting one loads."""
    code = (
        "import sys, json\n"
        f"for name in {blocked.split()!r}: sys.modules[name] = None\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _not_allowed(modules: set[str], allowed: set[str]) -> set[str]:
    stdlib = sys.stdlib_module_names
    return {m for m in modules if m not in allowed and m.split(".")[0] not in stdlib}


def test_core_loads_only_the_core_and_its_two_helpers() -> None:
    loaded = _loaded("import unveil.core")
    assert _not_allowed(loaded, CORE) == set()
    assert not any(m.startswith("unveil.sdk") for m in loaded)  # the core never loads the SDK


def test_the_client_class_loads_only_the_offline_client() -> None:
    assert _not_allowed(_loaded("import unveil; unveil.Client"), CLIENT) == set()


def test_the_offline_client_evaluates_without_loading_more() -> None:
    statement = (
        "from unveil import Client\n"
        "c = Client.from_file({'flags': {'f': {'default': 'on'}}})\n"
        "assert c.enabled('f', {'key': 'u'})"
    )
    assert _not_allowed(_loaded(statement), CLIENT) == set()


# A live client: the offline client, its sync, and httpx with what httpx itself needs.
LIVE = CLIENT | {"unveil.sdk.sync", "httpx", "httpcore", "h11", "anyio", "idna", "certifi"}
LIVE_PREFIXES = ("httpx.", "httpcore.", "h11.", "anyio.", "idna.", "certifi.")


def test_a_live_client_loads_only_evaluation_and_sync() -> None:
    """Every module a live client loads, as a plain install has them: click and rich
    (which httpx's own command line would load when they happen to be installed) and
    ruamel are blocked, and the client must not need them."""
    statement = (
        "import tempfile\n"
        "from unveil import Client\n"
        "c = Client('http://127.0.0.1:9', 'k', cache_dir=tempfile.mkdtemp())\n"
        "c.value('f', {'key': 'u'}, 'x')\n"
        "c.close()"
    )
    loaded = _loaded(statement, blocked="click rich pygments ruamel")
    assert "unveil.sdk.sync" in loaded
    extra = {m for m in _not_allowed(loaded, LIVE) if not m.startswith(LIVE_PREFIXES)}
    assert extra == set()


def test_the_openfeature_provider_loads_the_client_and_openfeature() -> None:
    loaded = _loaded("from unveil.openfeature import UnveilProvider")
    extra = {m for m in _not_allowed(loaded, CLIENT) if not m.startswith("openfeature")}
    assert extra == {"unveil.openfeature", "unveil.sdk.openfeature"}


def test_a_plain_install_needs_only_evaluation_and_sync() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("[")[0].split(";")[0].strip() for d in project["dependencies"]}
    assert names == {"mmh3", "google-re2", "httpx"}
    extras = project["optional-dependencies"]
    for extra in ("cli", "yaml"):
        assert any(d.startswith("ruamel.yaml") for d in extras[extra])
    for extra in ("server", "dev"):  # make setup installs these: everything is there
        assert {"click", "rich", "ruamel.yaml"} <= {
            d.split(">")[0].split("<")[0] for d in extras[extra]
        }


def test_yaml_without_ruamel_says_which_extra_to_install(tmp_path: Path) -> None:
    (tmp_path / "flags.yaml").write_text("flags:\n  f: {default: on}\n")
    (tmp_path / "flags.json").write_text('{"flags": {"f": {"default": "on"}}}')
    statement = (
        "from unveil import Client\n"
        f"assert Client.from_file({str(tmp_path / 'flags.json')!r}).enabled('f')\n"
        "try:\n"
        f"    Client.from_file({str(tmp_path / 'flags.yaml')!r})\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
    )
    code = f"import sys\nsys.modules['ruamel'] = None\n{statement}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout
    assert "pip install 'unveil[yaml]'" in out.stdout


@pytest.mark.parametrize("module", ["unveil.sdk.files", "unveil.sdk.sync"])
def test_sdk_modules_import_without_the_cli_or_yaml_packages(module: str) -> None:
    loaded = _loaded(f"import {module}", blocked="ruamel click rich")
    assert module in loaded


def test_the_command_without_its_extra_says_which_to_install() -> None:
    hide = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'click', 'rich'}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import unveil.cli.main\n"
    )
    ran = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True)
    assert ran.returncode == 1
    assert "pip install 'unveil[cli]'" in ran.stderr
    assert "Traceback" not in ran.stderr
