"""A metric check read from a real Prometheus (Debian's) scraping a real exporter whose error
rate doubles at the deploy: ``unveil deploy verify`` waits for the minutes after, then fails.

Skipped when Prometheus is missing, unless UNVEIL_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from click.testing import CliRunner

from tests.server_process import ADMIN_TOKEN, _free_port, database, start_server, stop, wait_for
from tests.test_prometheus_source import _prometheus_binary
from unveil.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
ENV = "/api/v1/projects/shop/environments/production"
#: the seconds of data before the deploy the check compares (its minutes: 0.5)
PERIOD = 30


def test_a_prometheus_rate_check_fails_when_errors_double_after_the_deploy(
    tmp_path: Path,
) -> None:
    binary = _prometheus_binary()
    switch_at = int(time.time()) + PERIOD + 10  # Prometheus scrapes a whole period before it
    exporter_port, port = _free_port(), _free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "tests.growing_exporter", str(exporter_port), str(switch_at)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: app\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert exporter.stdout is not None
        assert exporter.stdout.readline().strip() == b"ready"

        def scraped() -> bool:
            try:
                answer = httpx.get(f"{url}/api/v1/query", params={"query": "app_errors_total"})
                return bool(answer.json()["data"]["result"])
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        assert wait_for(scraped, 60), (tmp_path / "prometheus.log").read_text()[-2000:]
        with database("sqlite", tmp_path) as db:
            server = start_server(db)
            try:
                _verify(server.url, server.client(), url, switch_at, tmp_path)
            finally:
                stop(server)
    finally:
        prometheus.terminate()
        exporter.terminate()
        prometheus.wait(timeout=30)
        exporter.wait(timeout=30)
        log.close()


def _verify(
    server_url: str, api: httpx.Client, prometheus: str, switch_at: int, tmp_path: Path
) -> None:
    with api:
        assert api.put("/api/v1/projects/shop/services/api", json={}).status_code == 201
        # the deploy happens at the switch: wait for that moment to pass, then record it
        assert wait_for(lambda: time.time() >= switch_at + 1, timeout=PERIOD + 30)
        at = datetime.fromtimestamp(switch_at, UTC).isoformat()
        made = api.post(f"{ENV}/deploys", json={"service": "api", "version": "3.0.0", "at": at})
        assert made.status_code == 201, made.text
        checks = {
            "checks": [
                {
                    "name": "errors",
                    "metric": "errors",
                    "source": "prometheus",
                    "events": f"sum(increase(app_errors_total[{PERIOD}s]))",
                    "total": f"sum(increase(app_requests_total[{PERIOD}s]))",
                    "minutes": PERIOD / 60,
                }
            ]
        }
        (tmp_path / "checks.json").write_text(json.dumps(checks))
        env = {"UNVEIL_URL": server_url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_PROJECT": "shop"}
        args = ["deploy", "verify", "-e", "production", "-s", "api"]
        args += ["--checks", str(tmp_path / "checks.json"), "--prometheus", prometheus]
        ran = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
        assert ran.exit_code == 5, ran.output
        assert "waiting" in ran.output  # the minutes after the deploy were not over yet
        (check,) = api.get(f"{ENV}/deploys/d1").json()["verification"]["checks"]
    assert check["source"] == "prometheus"
    assert check["passed"] is False, check
    before, after = check["before"]["rate"], check["after"]["rate"]
    assert 0.015 < before < 0.025, check
    assert 0.035 < after < 0.045, check
