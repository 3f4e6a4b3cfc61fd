"""``unveil code scan`` on a sample application tree, run as the real command.

The tree holds Python calls in every style the scanner promises to read
(docs/code-references.md: "What counts as a reference"), calls it promises
to pass over, keys in TypeScript and Go through the built-in patterns, a
Ruby wrapper through a caller's pattern, and folders that .gitignore files
and --exclude leave out. The test names each expected flag with its line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from unveil.service.references import Reference, ScanError, references_payload, scan_tree

ROOT = Path(__file__).resolve().parents[1]

APP_PY = """\
from unveil import Client as FlagClient
from openfeature import api

flags = FlagClient.from_file("flags.yaml")
of = api.get_client()


class Checkout:
    def __init__(self, client):
        self.flags = client

    def total(self, ctx):
        if self.flags.enabled("new-checkout", ctx):
            return 1
        price = self.flags.value(
            "price-tier",
            ctx,
            default="basic",
        )
        return flags.evaluate(key="tax-rules", context=ctx)


def search(ctx):
    is_on = flags.enabled
    if is_on("search-v2", ctx):
        pass
    layout = of.get_string_value("layout", "grid")
    details = of.get_boolean_details(flag_key="dark-mode", default_value=False)
    get_client().experiment("ranker", control=old, candidate=new)
    return layout, details


def not_flags(settings, row, widget, mapping):
    settings.value("geometry", type=int)          # a keyword no flag method takes
    widget.enabled("label", 1, 2, 3)              # more arguments than any flag method
    row.value("has spaces")                       # not a valid flag key
    of.get_boolean_value("no-default")            # OpenFeature needs a default
    flags.enabled(name_from_config, ctx)          # not a literal: unknown until run
    "text".value("literal-receiver")              # a literal has no flag methods
    flags.track("checkout-errors", ctx)           # a metric name, not a flag
    mapping.get("dict-key")
"""

# No bound method here: only the statements on lines naming a method are walked.
JOBS_PY = """\
import functools


@cache(
    when=flags.enabled("cache-v2", None),
)
def cached():
    return 1


def totals():
    total = 0
    for c in range(3):
        total += c
    return [flags.value("in-a-comprehension", c) for c in range(3)]
"""

APP_TS = """\
import { OpenFeature } from "@openfeature/web-sdk";

const client = OpenFeature.getClient();
export const banner = () =>
  client.getBooleanValue('promo-banner', false);
export const Page = () => useFlag("react-nav", false);
"""

APP_GO = """\
package main

func handler() {
\tshow := client.BooleanValue(ctx, "go-beta", false, evalCtx)
}
"""

APP_RB = """\
class Cart
  def show?
    Flags.on?(:ruby_cart) && feature("ruby-cart")
  end
end
"""

RUBY_PATTERN = r"""feature\("([^"]+)"\)"""


def _tree(root: Path) -> Path:
    (root / "app" / "web").mkdir(parents=True)
    (root / "app" / "app.py").write_text(APP_PY)
    (root / "app" / "jobs.py").write_text(JOBS_PY)
    (root / "app" / "web" / "banner.ts").write_text(APP_TS)
    (root / "app" / "main.go").write_text(APP_GO)
    (root / "app" / "cart.rb").write_text(APP_RB)
    (root / "app" / "broken.py").write_text('flags.enabled("broken"\n')  # not Python
    (root / "app" / "logo.png").write_bytes(b"\x89PNG\0" + b'flags.enabled("in-binary")')
    # left out by the root .gitignore (a folder, and a file pattern with an exception)
    (root / ".gitignore").write_text("build/\n*.generated.py\n!keep.generated.py\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text('flags.enabled("in-build")\n')
    (root / "app" / "x.generated.py").write_text('flags.enabled("generated")\n')
    (root / "app" / "keep.generated.py").write_text('flags.enabled("kept")\n')
    # a nested .gitignore speaks for its own folder only
    (root / "app" / "web" / ".gitignore").write_text("dist/\n")
    (root / "app" / "web" / "dist").mkdir()
    (root / "app" / "web" / "dist" / "bundle.ts").write_text("client.getBooleanValue('dist', 1)")
    (root / "app" / "dist").mkdir()
    (root / "app" / "dist" / "d.py").write_text('flags.enabled("not-under-web")\n')
    # left out by --exclude, and never read: .git
    (root / "vendor").mkdir()
    (root / "vendor" / "lib.py").write_text('flags.enabled("vendored")\n')
    (root / ".git").mkdir()
    (root / ".git" / "hook.py").write_text('flags.enabled("in-git")\n')
    return root


EXPECTED = {
    "new-checkout": ["app/app.py:13"],
    "price-tier": ["app/app.py:16"],
    "tax-rules": ["app/app.py:20"],
    "search-v2": ["app/app.py:25"],
    "layout": ["app/app.py:27"],
    "dark-mode": ["app/app.py:28"],
    "ranker": ["app/app.py:29"],
    "cache-v2": ["app/jobs.py:5"],
    "in-a-comprehension": ["app/jobs.py:15"],
    "promo-banner": ["app/web/banner.ts:5"],
    "react-nav": ["app/web/banner.ts:6"],
    "go-beta": ["app/main.go:4"],
    "ruby-cart": ["app/cart.rb:3"],
    "kept": ["app/keep.generated.py:1"],
    "not-under-web": ["app/dist/d.py:1"],
}


def _unveil(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command's entry point in a fresh interpreter, this clone's code first."""
    code = "from unveil.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_the_command_lists_exactly_the_flags_of_the_tree_with_their_lines(tmp_path: Path) -> None:
    root = _tree(tmp_path / "shop")
    ran = _unveil(
        "code", "scan", str(root), "--pattern", RUBY_PATTERN, "--exclude", "vendor/", "--json"
    )
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert answer["references"] == EXPECTED
    assert answer["skipped"] == {"app/logo.png": "binary"}  # broken.py is read by the pattern


def test_the_table_prints_file_and_line_per_flag(tmp_path: Path) -> None:
    root = _tree(tmp_path / "shop")
    ran = _unveil("code", "scan", str(root))
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"│ new-checkout +│ app/app\.py:13 +│", ran.stdout)
    assert re.search(r"│ vendored +│ vendor/lib\.py:1 +│", ran.stdout)  # no --exclude this time
    assert "ruby-cart" not in ran.stdout  # no pattern for Ruby is built in
    assert "15 flag(s) in 15 place(s)" in ran.stdout
    assert "app/broken.py" not in ran.stdout
    assert "2 skipped" in ran.stdout  # the binary file and the Python that does not parse


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["/no/such/tree"], "path: '/no/such/tree' does not exist"),
        (["--pattern", "feature\\((.*"], "pattern: 'feature\\\\((.*' is not a valid regular"),
        (["--pattern", "feature"], "has 0 capture groups; it needs exactly one"),
        (["--pattern", "(a)(b)"], "has 2 capture groups"),
        (["--exclude", " "], "exclude: exclude 1 is empty"),
    ],
)
def test_bad_input_is_one_clear_sentence_and_exit_2(
    tmp_path: Path, args: list[str], said: str
) -> None:
    root = _tree(tmp_path / "shop")
    path = [] if args[0].startswith("/") else [str(root)]
    ran = _unveil("code", "scan", *path, *args)
    assert ran.returncode == 2, ran.stdout
    assert said in ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stdout == ""


def test_a_file_as_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("x = 1\n")
    with pytest.raises(ScanError, match="is not a folder") as caught:
        scan_tree(tmp_path / "one.py")
    assert caught.value.field == "path"


def test_the_payload_is_what_a_deploy_carries(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text('c.enabled("b")\nc.enabled("a")\nc.value("a", ctx)\n')
    refs = scan_tree(tmp_path)
    assert refs == [Reference("a", "a.py", 2), Reference("a", "a.py", 3), Reference("b", "a.py", 1)]
    assert references_payload(refs) == {"a": ["a.py:2", "a.py:3"], "b": ["a.py:1"]}


def test_a_huge_file_is_skipped(tmp_path: Path) -> None:
    from unveil.service.references import MAX_FILE_BYTES, scan

    (tmp_path / "big.py").write_text('c.enabled("big")\n' + "#" * MAX_FILE_BYTES)
    (tmp_path / "small.py").write_text('c.enabled("small")\n')
    result = scan(tmp_path)
    assert [r.flag for r in result.references] == ["small"]
    assert result.skipped == {"big.py": f"larger than {MAX_FILE_BYTES} bytes"}


def test_a_folder_of_a_repository_honours_the_repositorys_gitignore(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    api = repo / "services" / "api"
    (api / "generated").mkdir(parents=True)
    (repo / "build").mkdir()
    (repo / ".git").mkdir()
    (repo / ".gitignore").write_text("generated/\nbuild/\n")
    (repo / "services" / ".gitignore").write_text("*.tmp.py\n")
    (api / "app.py").write_text('flags.enabled("kept")\n')
    (api / "generated" / "x.py").write_text('flags.enabled("generated")\n')
    (api / "scratch.tmp.py").write_text('flags.enabled("scratch")\n')
    (repo / "build" / "out.py").write_text('flags.enabled("built")\n')
    assert [r.flag for r in scan_tree(api)] == ["kept"]
    # a folder the repository ignores, scanned on purpose, is scanned
    assert [r.flag for r in scan_tree(repo / "build")] == ["built"]
    # outside a repository the .gitignore files above the root are not read
    (repo / ".git").rmdir()
    assert [r.flag for r in scan_tree(api)] == ["generated", "kept", "scratch"]


def test_a_gitignore_too_large_for_the_fast_matcher_is_still_honoured(tmp_path: Path) -> None:
    """20,000 patterns made re2's set fail to compile: the scan crashed (exit 70)."""
    from unveil.service.references import scan

    patterns = [f"pattern{i}/**/*.x{i}" for i in range(20_000)] + ["ignored.py"]
    (tmp_path / ".gitignore").write_text("\n".join(patterns) + "\n")
    (tmp_path / "ignored.py").write_text('c.enabled("ignored")\n')
    (tmp_path / "kept.py").write_text('c.enabled("kept")\n')
    result = scan(tmp_path, excludes=[f"other{i}/*.y" for i in range(20_000)])
    assert [r.flag for r in result.references] == ["kept"]
