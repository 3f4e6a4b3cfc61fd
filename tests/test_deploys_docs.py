"""docs/deploys.md: the shell pipeline runs as written, and the GitHub Actions job reads right.

The shell example runs whole against a real server, a real HTTP target and
a real git repository; only its URLs are pointed at the test's processes,
its retry period is cut from two minutes to two seconds, and its metric
check (proven in test_deploys.py; it waits five minutes) is left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from tests.server_process import Server, database, start_server, stop
from tests.test_deploys import ENV, http_target
from unveil.cli.main import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "deploys.md"


def _block(heading: str, language: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(rf"```{language}\n(.*?)```", text[text.index(heading) :], re.DOTALL)
    return str(found[0])


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _repo(root: Path) -> Path:
    repo = root / "app"
    (repo / "scripts").mkdir(parents=True)
    (repo / "app.py").write_text(
        'import unveil\nclient = unveil.Client()\nclient.enabled("pay-v2")\n'
    )
    deploy = repo / "scripts" / "deploy-to-servers"
    deploy.write_text('#!/bin/sh\necho "$1" >> deployed.log\n')
    deploy.chmod(0o755)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    _git(repo, "tag", "1.0.0")
    return repo


def _bin(root: Path) -> Path:
    """An ``unveil`` command on PATH: this checkout's CLI."""
    folder = root / "bin"
    folder.mkdir()
    command = folder / "unveil"
    command.write_text(f'#!/bin/sh\nexec {sys.executable} -m unveil.cli.main "$@"\n')
    command.chmod(0o755)
    return folder


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Server]:
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        try:
            yield server
        finally:
            stop(server)


@pytest.fixture
def deployer(running: Server) -> str:
    with running.client() as api:
        made = api.post("/api/v1/tokens", json={"name": "ci", "kind": "admin", "role": "deployer"})
        assert made.status_code == 201, made.text
        return str(made.json()["secret"])


def test_the_shell_pipeline_records_verifies_and_rolls_back_as_written(
    running: Server, deployer: str, tmp_path: Path
) -> None:
    server = running
    script = _block("### A generic shell pipeline", "sh")
    script = script.replace(" \\\n  --error-rate checkout:errors --minutes 5", "")
    script = script.replace("--retry-for 2m", "--retry-for 2s")  # a 500 is retried 2 s, not 2 min
    assert "--error-rate" not in script
    assert "--retry-for 2s" in script
    repo = _repo(tmp_path)
    (repo / "deploy.sh").write_text(script)
    env = {
        **os.environ,
        "PATH": f"{_bin(tmp_path)}:{os.environ['PATH']}",
        "UNVEIL_URL": server.url,
        "UNVEIL_TOKEN": deployer,
        "UNVEIL_PROJECT": "shop",
        "CI_RUN_URL": "https://ci.example.com/runs/1",
    }

    def run(url: str) -> subprocess.CompletedProcess[str]:
        (repo / "deploy.sh").write_text(script.replace("https://api.example.com/healthz", url))
        return subprocess.run(
            ["sh", "deploy.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )

    with http_target(200) as url:
        good = run(url)
    assert good.returncode == 0, (good.stdout, good.stderr)
    assert "verified: ready to release" in good.stdout
    assert (repo / ".last-good-version").read_text().strip() == "1.0.0"

    (repo / "app.py").write_text("print('pay-v2 is gone')\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    _git(repo, "tag", "1.1.0")
    with http_target(500) as url:
        bad = run(url)
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "verification failed: rolling the deploy back" in bad.stdout
    assert (repo / "deployed.log").read_text().split() == ["1.0.0", "1.1.0", "1.0.0"]
    with server.client() as api:
        deploys = api.get(f"{ENV}/deploys").json()["deploys"]
    assert [(d["version"], d["rollback"], d["verified"]) for d in deploys] == [
        ("1.0.0", True, None),
        ("1.1.0", False, "failed"),
        ("1.0.0", False, "passed"),
    ]
    assert deploys[2]["flags"] == ["pay-v2"]
    assert deploys[1]["flags"] == []
    assert deploys[0]["reason"] == "verification failed"
    assert {d["actor"] for d in deploys} == {"ci"}


def test_the_github_actions_job_is_yaml_using_options_that_exist() -> None:
    job = YAML(typ="safe").load(_block("### GitHub Actions", "yaml"))
    steps = job["jobs"]["deploy"]["steps"]
    env = job["jobs"]["deploy"]["env"]
    assert set(env) == {"UNVEIL_URL", "UNVEIL_PROJECT", "UNVEIL_TOKEN"}
    commands = [
        line.strip()
        for step in steps
        for line in str(step.get("run", "")).replace("\n", " ").split("\n")
        if "unveil deploy" in line
    ]
    assert len(commands) == 3
    for command in commands:
        for part in command.split("unveil deploy ")[1:]:
            name = part.split()[0]
            shown = CliRunner().invoke(main, ["deploy", name, "--help"])
            assert shown.exit_code == 0, shown.output
            for option in re.findall(r"(--[a-z-]+)", part):
                assert option in shown.output, (name, option)
