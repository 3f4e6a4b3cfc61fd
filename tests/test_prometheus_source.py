"""The Prometheus metric source against a real Prometheus (Debian's) scraping a real exporter.

Prometheus is started on a loopback port with a temporary configuration and
data directory; it scrapes tests/metrics_exporter.py every second. Skipped
when /usr/bin/prometheus is missing, unless UNVEIL_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.metrics_exporter import ERRORS
from tests.server_process import _free_port, wait_for
from unveil.core.logbuckets import bucket_of
from unveil.release.plan import Guard, GuardKind, Source
from unveil.service.metrics import GuardReader
from unveil.service.prometheus import PrometheusSource, SourceError, promql_string
from unveil.store.database import make_engine, upgrade
from unveil.store.events import EventCounts

ROOT = Path(__file__).resolve().parent.parent
ERRORS_QUERY = 'sum(app_errors_total{variant="{variant}"})'
LATENCY_QUERY = 'sum by (le) (app_latency_ms_bucket{variant="{variant}"})'


def _guard(kind: GuardKind, query: str, name: str = "g") -> Guard:
    metric = "errors" if kind is GuardKind.RATE else "latency_ms"
    return Guard(name, kind, metric, source=Source.PROMETHEUS, query=query)


@dataclass
class Running:
    url: str
    started: datetime  # before the exporter had any number


def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        if os.environ.get("UNVEIL_TEST_REQUIRE_SERVICES"):
            pytest.fail(
                "prometheus is required here and not installed (apt-get install prometheus)"
            )
        pytest.skip("prometheus is not installed")
    return found


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    binary = _prometheus_binary()
    started = datetime.now(UTC) - timedelta(seconds=1)
    work = tmp_path_factory.mktemp("prometheus")
    exporter_port, port = _free_port(), _free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "tests.metrics_exporter", str(exporter_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert exporter.stdout is not None
    assert exporter.stdout.readline().strip() == b"ready"
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: exporter\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    log = (work / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        def scraped() -> bool:
            answer = httpx.get(f"{url}/api/v1/query", params={"query": "app_errors_total"})
            return len(answer.json()["data"]["result"]) == len(ERRORS)

        assert wait_for(ready, 60), (work / "prometheus.log").read_text()[-2000:]
        assert wait_for(scraped, 60)
        yield Running(url, started)
    finally:
        server.terminate()
        exporter.terminate()
        server.wait(timeout=30)
        exporter.wait(timeout=30)
        log.close()


def _last_scrape(prometheus: Running) -> float:
    """When the exporter was last scraped (the time of its latest sample)."""
    query = 'timestamp(app_errors_total{variant="on"})'
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query}).json()
    return float(answer["data"]["result"][0]["value"][1])


def test_a_rate_guard_reads_each_variants_count_in_the_range(prometheus: Running) -> None:
    source = PrometheusSource(prometheus.url)
    guard = _guard(GuardKind.RATE, ERRORS_QUERY)
    now = datetime.now(UTC)
    try:
        for variant, n in ERRORS.items():  # the odd name is escaped, so it is found
            assert source.count(guard, variant, prometheus.started, now) == n
        # nothing grew after the first scrape: a range from one scrape to a later one is 0
        first = _last_scrape(prometheus)
        assert wait_for(lambda: _last_scrape(prometheus) > first)
        assert source.count(guard, "on", datetime.fromtimestamp(first, UTC), now) == 0
        assert source.count(guard, "nobody", prometheus.started, now) == 0
    finally:
        source.close()


def test_a_continuous_guard_reads_the_histogram_by_le(prometheus: Running) -> None:
    source = PrometheusSource(prometheus.url)
    guard = _guard(GuardKind.CONTINUOUS, LATENCY_QUERY)
    now = datetime.now(UTC)
    try:
        on = source.histogram(guard, "on", prometheus.started, now)
        off = source.histogram(guard, "off", prometheus.started, now)
    finally:
        source.close()
    # each Prometheus bucket's values at its geometric middle: 15 ms in (10, 20], 30 in (20, 40]
    assert dict(on.buckets) == {bucket_of((10 * 20) ** 0.5): 50, bucket_of((20 * 40) ** 0.5): 50}
    assert dict(off.buckets) == {bucket_of((5 * 10) ** 0.5): 50, bucket_of((10 * 20) ** 0.5): 50}
    assert on.count == off.count == 100
    assert on.quantile(0.5) / off.quantile(0.5) == pytest.approx(2.0, rel=0.1)


def test_the_reader_mixes_prometheus_guards_with_unveils_own_exposures(
    prometheus: Running, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    upgrade(url)
    engine = make_engine(url)
    counts = EventCounts(engine)
    source = PrometheusSource(prometheus.url)
    now = time.time()
    start_s = int(prometheus.started.timestamp()) // 10 * 10
    cell = (1, start_s, "checkout", "on", "$exposure")
    counts.add([(cell, 40, 40.0), ((1, start_s, "checkout", "off", "$exposure"), 30, 30.0)])
    # the reader's clock a minute ahead, so the window of the first scrape is closed
    reader = GuardReader(counts, source, clock=lambda: now + 60)
    end = datetime.fromtimestamp((int(now) // 10 + 1) * 10, UTC)
    guards = [
        _guard(GuardKind.RATE, ERRORS_QUERY, "errors"),
        _guard(GuardKind.CONTINUOUS, LATENCY_QUERY, "latency"),
    ]
    try:
        batch = reader.batch(
            1, "checkout", "on", "off", guards, datetime.fromtimestamp(start_s, UTC), end
        )
    finally:
        source.close()
        counts.close()
        engine.dispose()
    assert (batch.treatment.exposures, batch.control.exposures) == (40, 30)
    assert (batch.treatment.counts["errors"], batch.control.counts["errors"]) == (9, 3)
    assert batch.treatment.values["latency_ms"].count == 100


@pytest.mark.parametrize(
    ("kind", "query", "message"),
    [
        (GuardKind.RATE, 'app_errors_total{variant!="{variant}"}', "one cumulative count"),
        (GuardKind.CONTINUOUS, 'sum(app_latency_ms_count{variant="{variant}"})', "'le' label"),
        (GuardKind.RATE, "sum(app_errors_total{variant={variant}})", "inside double quotes"),
        (GuardKind.RATE, 'sum(app_errors_total{variant="{variant}"}', "Prometheus answered 400"),
    ],
)
def test_a_query_that_answers_something_else_is_refused_clearly(
    prometheus: Running, kind: GuardKind, query: str, message: str
) -> None:
    source = PrometheusSource(prometheus.url)
    try:
        read = source.count if kind is GuardKind.RATE else source.histogram
        with pytest.raises(SourceError, match=message):
            read(_guard(kind, query), "on", prometheus.started, datetime.now(UTC))
    finally:
        source.close()


def test_an_unreachable_prometheus_is_a_clear_error() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{_free_port()}", timeout=2)
    try:
        with pytest.raises(SourceError, match=r"Prometheus at http://127\.0\.0\.1"):
            source.count(
                _guard(GuardKind.RATE, ERRORS_QUERY), "on", datetime.now(UTC), datetime.now(UTC)
            )
    finally:
        source.close()


def test_a_variant_name_is_escaped_for_a_promql_string() -> None:
    assert promql_string('a"b\\c') == 'a\\"b\\\\c'
