"""How long the stale-flag report and the leader's check take for an environment of many flags.

Builds a SQLite database with one environment of ``--flags`` flags (half of
them serving one variant to everyone, a tenth re-described once so that the
"since when" walk has history to read, every flag's audit aged 40 days),
then times the report (what ``GET .../stale-flags`` computes) and one run of
the leader's check (which marks and announces each flag found stale). Run:

    PYTHONPATH=src nice -n 10 python bench/stale_report.py [--flags 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from unveil.service.access import AccessService
from unveil.service.flags import Change, FlagService
from unveil.service.stale import StaleService
from unveil.store import tables as t
from unveil.store.database import make_engine, upgrade
from unveil.store.events import EventCounts
from unveil.store.unit import Store

SPLIT = {"default": {"rollout": {"on": 50, "off": 50}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'unveil.db'}"
        upgrade(url)
        engine = make_engine(url)
        store = Store(engine)
        AccessService(store).ensure_environment("shop", "production")
        flags = FlagService(store)
        document = {
            "flags": {f"f{i}": {"default": "on"} if i % 2 else SPLIT for i in range(args.flags)}
        }
        flags.apply_document("shop", "production", document, Change("bench"))
        for i in range(1, args.flags, 20):  # re-described: the walk reads their history
            key = f"f{i}"
            version = flags.get_item("flags", "shop", "production", key).version
            body = {"default": "on", "description": "re-described"}
            flags.put_item("flags", "shop", "production", key, body, Change("bench"), version)
        with engine.begin() as conn:
            conn.execute(update(t.audit).values(at=datetime.now(UTC) - timedelta(days=40)))
        counts = EventCounts(engine)
        stale = StaleService(store, counts)
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            report = stale.report("shop", "production")
            timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        with store.unit_of_work() as work:
            marked = stale.check(work)
        checked = time.perf_counter() - started
        counts.close()
        engine.dispose()
    print(
        f"{args.flags} flags, {len(report['flags'])} stale: report best of 3 {min(timings):.3f} s;"
        f" the leader's check (marking and announcing {marked}) {checked:.3f} s"
    )


if __name__ == "__main__":
    main()
