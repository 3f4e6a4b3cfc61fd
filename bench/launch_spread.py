"""How long a promotion of a whole environment takes, and how far apart a launch's flags go on.

Starts a real server process (SQLite in a temporary folder), fills staging
with N flags (one document apply), then times a dry run and the promotion
of all of them to production through the API. Then it plans a launch of M
of those flags in production two seconds ahead and, once it is done,
prints how late after its planned time the first flag change was audited
and the spread between the first and the last (they are in one
transaction: the spread is the time the writes take, not the scheduler).

    .venv/bin/python bench/launch_spread.py [--flags 1000] [--launched 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_process import start_server, stop, wait_for

SHOP = "/api/v1/projects/shop"
PRODUCTION = f"{SHOP}/environments/production"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flags", type=int, default=1000)
    parser.add_argument("--launched", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(
            f"sqlite:///{folder}/unveil.db", None, True, "--worker-interval", "0.2"
        )
        try:
            with server.client() as api:
                flags = {f"f{i}": {"enabled": False, "default": "on"} for i in range(options.flags)}
                document = {"version": 1, "flags": flags, "segments": {}}
                made = api.put(f"{SHOP}/environments/staging/document", json=document)
                assert made.status_code == 200, made.text
                body = {"source": "staging", "target": "production"}
                started = time.perf_counter()
                dry = api.post(f"{SHOP}/promotions", json={**body, "dry_run": True}, timeout=120)
                dry_s = time.perf_counter() - started
                assert dry.status_code == 200, dry.text
                started = time.perf_counter()
                done = api.post(f"{SHOP}/promotions", json=body, timeout=120)
                apply_s = time.perf_counter() - started
                assert done.status_code == 200, done.text
                print(
                    f"promotion of {options.flags} flags: dry run {dry_s * 1000:.0f} ms, "
                    f"applied {apply_s * 1000:.0f} ms"
                )

                planned = datetime.now(UTC) + timedelta(seconds=2)
                changes = [
                    {"environment": "production", "flag": f"f{i}", "enabled": True}
                    for i in range(options.launched)
                ]
                launch = api.post(
                    f"{SHOP}/launches",
                    json={
                        "name": "bench",
                        "notes": "n",
                        "planned_at": planned.isoformat(),
                        "changes": changes,
                    },
                ).json()

                def done_() -> bool:
                    found = api.get(f"{SHOP}/launches/{launch['id']}").json()
                    return bool(found["state"] == "done")

                assert wait_for(done_, timeout=60)
                entries = api.get(f"{PRODUCTION}/audit", params={"actor": f"launch:{launch['id']}"})
                times = sorted(datetime.fromisoformat(e["at"]) for e in entries.json()["entries"])
                late = (times[0] - planned).total_seconds()
                spread = (times[-1] - times[0]).total_seconds()
                print(
                    f"launch of {options.launched} flags: first change {late * 1000:.0f} ms "
                    f"after its time, all {len(times)} within {spread * 1000:.0f} ms"
                )
        finally:
            stop(server)


if __name__ == "__main__":
    main()
