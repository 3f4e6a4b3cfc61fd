"""One flag write at two sizes in turn, in one process: does its cost grow with the environment?

bench/scale.py measures each size in its own server, minutes apart; on a
shared machine the load moves more in minutes than the sizes differ. This
builds two nodes' services in one process (SQLite in temporary folders), one
environment of each size, and times a flag write on each in turn: the use
case (``FlagService.put_item``) with the node's snapshot moved after the
commit, as a server answers a PUT; no HTTP.

    .venv/bin/python bench/write_cost.py [--sizes 10,10000] [--writes 60]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scale import changed, environment

from unveil.server.app import build_services
from unveil.service.flags import Change
from unveil.store.database import make_engine, upgrade

WHO = Change("bench")


def node(size: int, folder: str) -> tuple[Any, list[str]]:
    url = f"sqlite:///{folder}/size-{size}.db"
    upgrade(url)
    svc = build_services(make_engine(url))
    svc.store.after_commit.append(svc.hub.changed_here)
    env_id = svc.access.ensure_environment("shop", "production")
    document = environment(size)
    svc.flags.apply_document("shop", "production", document, WHO)
    svc.hub.ready(env_id)
    return svc, list(document["flags"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,10000")
    parser.add_argument("--writes", type=int, default=60)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        nodes = {size: node(size, folder) for size in sizes}
        times: dict[int, list[float]] = {size: [] for size in sizes}
        rng = random.Random(1)
        for n in range(args.writes):
            for size, (svc, keys) in nodes.items():
                key = rng.choice(keys)
                item = svc.flags.get_item("flags", "shop", "production", key)
                body = changed(item.data, n)
                started = time.perf_counter()
                svc.flags.put_item("flags", "shop", "production", key, body, WHO, item.version)
                times[size].append(time.perf_counter() - started)
    print(f"one flag write in process, sizes in turn, {args.writes} each, the first 5 dropped")
    for size, measured in times.items():
        kept = sorted(measured[5:])
        p50 = 1000 * statistics.median(kept)
        p90 = 1000 * kept[int(0.9 * (len(kept) - 1))]
        print(f"{size:>6} flags  p50 {p50:.1f} ms  p90 {p90:.1f} ms")


if __name__ == "__main__":
    main()
