"""Unleash's own client specification, run through an import and the unveil client.

The specification is npm's @unleash/client-specification at a pinned
version, fetched with ``npm pack`` into ``.cache/`` (ignored by git) the
first time the tests run. Every spec's features are imported, then every
``isEnabled`` test and every variant test is evaluated with the unveil client
and compared with Unleash's expected answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from unveil import Client
from unveil.migrate import import_unleash, unleash_context
from unveil.migrate.unleash import DISABLED, ON_WITHOUT_VARIANT

SPEC_PACKAGE = "@unleash/client-specification"
SPEC_VERSION = "6.1.0"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / f"unleash-spec-{SPEC_VERSION}"

# Unleash gives the name "disabled" both to "off" and to "on, with no variant",
# telling them apart by feature_enabled; unveil names the second "enabled".
# These variant tests expect the shared name and get "enabled" with the same
# on/off answer, and are the only ones allowed to differ.
NAMED_APART = {
    ("08-variants.json", "Feature.Variants.F"),
    ("16-strategy-variants.json", "Feature.strategy.empty.variants"),
}


def _fetch_spec() -> Path:
    folder = CACHE / "package" / "specifications"
    if (folder / "index.json").exists():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("UNVEIL_TEST_REQUIRE_SERVICES"):
            pytest.fail("npm is needed to fetch the Unleash client specification")
        pytest.skip("npm is not installed")
    CACHE.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [npm, "pack", f"{SPEC_PACKAGE}@{SPEC_VERSION}", "--silent"],
        cwd=CACHE,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    tarball = CACHE / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        archive.extractall(CACHE, filter="data")
    return folder


@pytest.fixture(scope="module")
def specs() -> list[tuple[str, dict[str, Any]]]:
    folder = _fetch_spec()
    names = json.loads((folder / "index.json").read_text())
    return [(name, json.loads((folder / name).read_text())) for name in names]


def _variant_answer(client: Client, toggle: str, context: dict[str, Any]) -> dict[str, Any]:
    """What the unveil client says, in the shape of Unleash's expected variant."""
    result = client.evaluate(toggle, context)
    on = client.enabled(toggle, context)
    variant = result.variant if result.variant is not None else DISABLED
    named = variant not in (DISABLED, ON_WITHOUT_VARIANT)
    answer: dict[str, Any] = {"name": variant, "enabled": named, "feature_enabled": on}
    if named and result.value is not None:
        answer["payload"] = result.value
    return answer


def test_the_unleash_client_specification(specs: list[tuple[str, dict[str, Any]]]) -> None:
    passed, total, failures = 0, 0, []
    for name, spec in specs:
        imported = import_unleash(spec["state"])
        client = Client.from_file(imported.document)
        for case in spec.get("tests", []):
            total += 1
            context = unleash_context(case["context"])
            got = client.enabled(case["toggleName"], context)
            if got is case["expectedResult"]:
                passed += 1
            else:
                failures.append((name, case["toggleName"], case["description"], got))
        for case in spec.get("variantTests", []):
            total += 1
            context = unleash_context(case["context"])
            got_variant = _variant_answer(client, case["toggleName"], context)
            expected = dict(case["expectedResult"])
            if got_variant == expected:
                passed += 1
                continue
            if (name, case["toggleName"]) in NAMED_APART:
                # the one allowed difference: the name, nothing else
                assert expected["name"] == DISABLED
                assert expected["feature_enabled"] is True
                assert got_variant == {**expected, "name": ON_WITHOUT_VARIANT}
                continue
            failures.append((name, case["toggleName"], case["description"], got_variant))
    named_apart = len(NAMED_APART)
    print(
        f"\nUnleash client specification {SPEC_VERSION}: {passed} of {total} passed; "
        f"{named_apart} differ only by the name of 'on, no variant'"
    )
    assert failures == []
    assert passed == total - named_apart
