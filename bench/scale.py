"""What a change costs as an environment grows: 10, 1,000, 10,000 flags.

    .venv/bin/python bench/scale.py [--sizes 10,1000,10000] [--database-url URL]
                                    [--writes 200] [--starts 5] [--seconds 2]
                                    [--no-server | --no-sdk]

For each size it builds a realistic environment (segments with include
lists and rules; flags with targets, rules on attributes and segments,
percentage rollouts, some prerequisites, some multi-variant) and measures:

- write p50/p99: one flag PUT (with If-Match) through the admin API of a real
  ``unveil serve`` process, on SQLite in a temporary folder or on the
  database of ``--database-url`` (PostgreSQL: a fresh database is made there
  and dropped after);
- refused: one flag PUT that is refused (a rule names a segment that does not
  exist), median of a tenth of ``--writes``;
- apply: one PUT .../document of the whole environment (every flag changed);
- patch: an ``unveil.Client`` fed over the in-memory transport of
  tests/memory_server.py applying a one-flag patch, timed around the SDK's own
  patch path (``Sync._apply``: merge, validate, compile, swap, cache write),
  so that no network or server time is counted; median of ``--writes``;
- start: from ``Client(url, sdk_key)`` to the first answer of a flag, live
  against the real server (a fresh cache folder, so the snapshot comes over
  the network); median of ``--starts``;
- memory: tracemalloc's count of the bytes the application process holds for
  the flags (the traced heap after minus before the client), after start and
  the first disk-cache write (``mem``) and after every flag was evaluated once
  (``mem all``): the client's flags and compiled code, measured with the
  in-memory transport so that no server shares the process's heap;
- eval: evaluations per second of one thread, alone and while another thread
  applies a one-flag patch ten times a second (``eval+p``, and its ratio).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.memory_server import MemoryServer
from tests.server_process import ADMIN_TOKEN, sdk_key, start_server, stop

from unveil import Client

ENV = "/api/v1/projects/shop/environments/production"
COUNTRIES = ["NL", "DE", "FR", "BE", "US", "GB", "ES", "IT", "SE", "PL"]
PLANS = ["free", "team", "business", "enterprise"]


# -- a realistic environment -------------------------------------------------------------


def make_segment(rng: random.Random, i: int) -> dict[str, Any]:
    segment: dict[str, Any] = {"description": f"segment {i}"}
    if rng.random() < 0.6:
        segment["include"] = [f"user-{rng.randrange(100_000)}" for _ in range(rng.randint(1, 20))]
    segment["rules"] = [
        {"when": [{"attr": "email", "op": "ends_with", "values": [f"@corp{i}.example.com"]}]},
        {
            "when": [
                {"attr": "country", "op": "in", "values": rng.sample(COUNTRIES, 3)},
                {"attr": "plan", "op": "eq", "values": [rng.choice(PLANS)]},
            ]
        },
    ]
    return segment


def make_flag(rng: random.Random, i: int, keys: list[str], segments: list[str]) -> dict[str, Any]:
    """One flag of a mix seen in real environments: most are booleans with a rule or two."""
    multi = rng.random() < 0.1
    flag: dict[str, Any] = {"description": f"flag {i}: what it is for, in a sentence"}
    if multi:
        flag |= {
            "kind": "string",
            "variants": {"control": "control", "blue": "blue", "green": "green"},
            "off_variant": "control",
        }
        on, off = "blue", "control"
    else:
        flag["kind"] = "boolean"
        on, off = "on", "off"
    flag["enabled"] = rng.random() < 0.9
    if rng.random() < 0.2:
        flag["targets"] = {on: [f"user-{rng.randrange(100_000)}" for _ in range(rng.randint(1, 5))]}
    if keys and rng.random() < 0.05:
        flag["prerequisites"] = [{"flag": rng.choice(keys[-50:]), "variants": ["on"]}]
    rules: list[dict[str, Any]] = []
    if rng.random() < 0.7:
        rules.append(
            {
                "when": [{"attr": "country", "op": "in", "values": rng.sample(COUNTRIES, 2)}],
                "serve": on,
            }
        )
    if segments and rng.random() < 0.3:
        rules.append(
            {
                "when": [{"segment": rng.choice(segments)}],
                "serve": {"rollout": {on: 50, off: 50}},
            }
        )
    if rng.random() < 0.3:
        rules.append(
            {
                "when": [
                    {"attr": "plan", "op": "in", "values": ["business", "enterprise"]},
                    {"attr": "version", "op": "semver_gt", "values": ["2.3.0"]},
                ],
                "serve": on,
            }
        )
    if rules:
        flag["rules"] = rules
    if multi:
        flag["default"] = {"rollout": {"control": 50, "blue": 25, "green": 25}}
    elif rng.random() < 0.5:
        percent = rng.choice([1, 5, 10, 25, 50])
        flag["default"] = {"rollout": {"on": percent, "off": 100 - percent}}
    else:
        flag["default"] = "off"
    return flag


def environment(size: int, seed: int = 11) -> dict[str, Any]:
    """``size`` flags and one segment per twenty flags (at least two)."""
    rng = random.Random(seed)
    segments = {f"seg-{i}": make_segment(rng, i) for i in range(max(2, size // 20))}
    names = list(segments)
    flags: dict[str, Any] = {}
    boolean_keys: list[str] = []
    for i in range(size):
        key = f"flag-{i:05d}"
        flags[key] = make_flag(rng, i, boolean_keys, names)
        if flags[key]["kind"] == "boolean":
            boolean_keys.append(key)
    return {"version": 1, "segments": segments, "flags": flags}


def changed(flag: dict[str, Any], n: int) -> dict[str, Any]:
    """The flag with a different description: a real write, nothing else moves."""
    return {**flag, "description": f"changed {n}"}


def users(count: int = 1000) -> list[dict[str, str]]:
    rng = random.Random(5)
    return [
        {
            "key": f"user-{i}",
            "country": rng.choice(COUNTRIES),
            "plan": rng.choice(PLANS),
            "email": f"u{i}@corp{rng.randrange(50)}.example.com",
            "version": f"2.{rng.randrange(6)}.0",
        }
        for i in range(count)
    ]


# -- measurements ---------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@contextmanager
def database(url: str | None) -> Iterator[str]:
    if url is None:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/scale.db"
        return
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    name = f"unveil_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{plain.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_figures(
    document: dict[str, Any], database_url: str | None, writes: int, starts: int
) -> dict[str, Any]:
    """Write p50/p99, whole-document apply, and start-to-serving against a real server."""
    out: dict[str, Any] = {}
    with database(database_url) as url:
        server = start_server(url)
        try:
            admin = httpx.Client(
                base_url=server.url,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=600,
            )
            seeded = admin.put(f"{ENV}/document", json=document)
            if seeded.status_code != 200:
                out["refused"] = f"{seeded.status_code}: {seeded.text[:120]}"
                return out
            again = {
                **document,
                "flags": {k: changed(v, 0) for k, v in document["flags"].items()},
            }
            started = time.perf_counter()
            applied = admin.put(f"{ENV}/document", json=again)
            out["apply"] = time.perf_counter() - started
            applied.raise_for_status()
            keys = list(document["flags"])
            rng = random.Random(3)
            latencies = []
            for n in range(writes):
                key = rng.choice(keys)
                current = admin.get(f"{ENV}/flags/{key}")
                current.raise_for_status()
                body = changed(current.json()["data"], n + 1)
                started = time.perf_counter()
                answer = admin.put(
                    f"{ENV}/flags/{key}", json=body, headers={"If-Match": current.headers["etag"]}
                )
                latencies.append(time.perf_counter() - started)
                answer.raise_for_status()
            out["write_p50"] = percentile(latencies, 0.5)
            out["write_p99"] = percentile(latencies, 0.99)
            refusals = []
            for n in range(max(writes // 10, 5)):
                wrong = {
                    "default": "off",
                    "rules": [{"when": [{"segment": "nowhere"}], "serve": "on"}],
                }
                started = time.perf_counter()
                answer = admin.put(f"{ENV}/flags/refused-{n}", json=wrong)
                refusals.append(time.perf_counter() - started)
                if answer.status_code != 422:
                    raise RuntimeError(f"a wrong flag was answered {answer.status_code}")
            out["refusal"] = statistics.median(refusals)
            key = sdk_key(url)
            first = keys[0]
            times = []
            for _ in range(starts):
                with tempfile.TemporaryDirectory() as cache:
                    started = time.perf_counter()
                    client = Client(server.url, key, cache_dir=cache, events=False)
                    try:
                        if not client.wait_until_ready(120):
                            raise RuntimeError("the client did not become ready")
                        client.value(first, {"key": "user-1"})
                        times.append(time.perf_counter() - started)
                    finally:
                        client.close()
            out["start"] = statistics.median(times)
            admin.close()
        finally:
            stop(server)
    return out


def _patch(client: Client, flags: dict[str, Any], key: str, n: int) -> dict[str, Any]:
    revision = client.revision
    assert revision is not None
    return {
        "version": revision + 1,
        "previous": revision,
        "flags": {key: changed(flags[key], n)},
        "segments": {},
    }


def sdk_figures(document: dict[str, Any], patches: int, seconds: float) -> dict[str, Any]:
    """Patch, memory and evaluation under patches, with the in-memory transport."""
    out: dict[str, Any] = {}
    flags = document["flags"]
    keys = list(flags)
    memory = MemoryServer(flags, revision=1)
    memory.document["segments"] = document["segments"]
    people = users()
    with tempfile.TemporaryDirectory() as cache:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        client = Client(
            "http://memory", "sdk-key", cache_dir=cache, events=False, transport=memory.transport()
        )
        if not client.wait_until_ready(120):
            raise RuntimeError("the client did not become ready")
        sync = client._sync
        assert sync is not None
        # the sync thread writes the disk cache after installing: until it is done the
        # snapshot it read is still alive (there is no event for it: polled)
        while not sync._cache.exists():
            time.sleep(0.01)
        time.sleep(0.2)
        gc.collect()
        client.value(keys[0], people[0])
        out["mem"] = tracemalloc.get_traced_memory()[0] - base
        for key in keys:
            client.value(key, people[0])
        out["mem_all"] = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        rng = random.Random(9)
        timings = []
        for n in range(patches):
            patch = _patch(client, flags, rng.choice(keys), n)
            started = time.perf_counter()
            sync._apply(patch)
            timings.append(time.perf_counter() - started)
        out["patch"] = statistics.median(timings)
        out["patch_p99"] = percentile(timings, 0.99)

        hot = [rng.choice(keys) for _ in range(50)]
        pairs = [(hot[i % len(hot)], people[i % len(people)]) for i in range(10_000)]

        def evaluations(stop_at: float) -> float:
            count = 0
            value = client.value
            start = time.perf_counter()
            while time.perf_counter() < stop_at:
                for key, context in pairs:
                    value(key, context)
                count += len(pairs)
            return count / (time.perf_counter() - start)

        quiet = evaluations(time.perf_counter() + seconds)
        stop_patching = threading.Event()
        applied = 0

        def patcher() -> None:
            nonlocal applied
            n = 10_000
            due = time.perf_counter()
            while not stop_patching.is_set():
                sync._apply(_patch(client, flags, rng.choice(keys), n))
                applied += 1
                n += 1
                due += 0.1
                stop_patching.wait(max(0.0, due - time.perf_counter()))

        thread = threading.Thread(target=patcher)
        thread.start()
        busy = evaluations(time.perf_counter() + seconds)
        stop_patching.set()
        thread.join()
        again = evaluations(time.perf_counter() + seconds)
        out["eval"] = (quiet + again) / 2
        out["eval_patched"] = busy
        out["patches_per_s"] = applied / seconds
        client.close()
    memory.close()
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--database-url", default=None, help="PostgreSQL; default SQLite")
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--no-server", action="store_true", help="only the SDK figures")
    parser.add_argument("--no-sdk", action="store_true", help="only the server figures")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        document = environment(size)
        row: dict[str, Any] = {"size": size}
        if not args.no_server:
            row |= server_figures(document, args.database_url, args.writes, args.starts)
        if not args.no_sdk:
            row |= sdk_figures(document, args.writes, args.seconds)
        rows.append(row)
        print(f"done {size}: {row}", file=sys.stderr, flush=True)
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"bench/scale.py --sizes {args.sizes} ({store}; times in ms, memory by tracemalloc)")
    header = (
        f"{'flags':>6} {'write p50':>9} {'write p99':>9} {'refused':>8} {'apply':>9}"
        f" {'patch p50':>9}"
        f" {'patch p99':>9} {'start':>8} {'mem MB':>7} {'mem all':>7}"
        f" {'eval/s':>10} {'eval+p/s':>10} {'ratio':>6} {'p/s':>5}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['size']:>6} {ms(row.get('write_p50')):>9} {ms(row.get('write_p99')):>9}"
            f" {ms(row.get('refusal')):>8} {ms(row.get('apply')):>9}"
            f" {ms(row.get('patch')):>9} {ms(row.get('patch_p99')):>9}"
            f" {ms(row.get('start')):>8}"
            + (
                f" {row['mem'] / 1e6:>7.1f} {row['mem_all'] / 1e6:>7.1f}"
                f" {row['eval']:>10.0f} {row['eval_patched']:>10.0f}"
                f" {row['eval_patched'] / row['eval']:>6.2f} {row['patches_per_s']:>5.1f}"
                if "eval" in row
                else ""
            )
        )
        if "refused" in row:
            print(f"       server refused the document: {row['refused']}")


if __name__ == "__main__":
    main()
