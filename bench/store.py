"""Store backends head to head: ``python bench/store.py [--json] [--ops N] [--dir DIR]``.

For SQLite (a file on the real disk; its worker as a thread, as an embedded store has
it, and as a process, as a server's store has it) and a single-node etcd started here
(data on the same disk, and on tmpfs when /dev/shm exists) it measures, in one run:

- sequential put/s (one put awaited after another),
- txn/s (sequential compare-and-put: ``mod == last`` then put),
- concurrent put/s (64 puts in flight),
- put-to-watch latency p50/p99 in ms (from calling put to the event arriving).

Prints a table, or one JSON object with ``--json``. Starts and kills its own etcd (by
PID) and removes every temp dir; each measurement is bounded by ``--phase-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support.etcd

from podium.store import Compare, Put, Store
from podium.store.etcd import EtcdStore
from podium.store.sqlite import SQLiteStore
from tests.support.etcd import EtcdCluster, etcd_binary, start_etcd

VALUE = b'{"kind": "guest", "spec": {"cpus": 2, "memory": 2048}, "status": "running"}' * 2
IN_FLIGHT = 64
KEYS = 1000  # distinct keys the puts cycle over


async def _timed(ops: int, run: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await run()
    return ops / (time.perf_counter() - started)


async def seq_put(store: Store, ops: int) -> float:
    async def run() -> None:
        for i in range(ops):
            await store.put(f"bench/seq/{i % KEYS}", VALUE)

    return await _timed(ops, run)


async def txn_cas(store: Store, ops: int) -> float:
    mod = await store.put("bench/cas", VALUE)

    async def run() -> None:
        nonlocal mod
        for _ in range(ops):
            result = await store.txn(
                [Compare("bench/cas", "mod", "=", mod)], [Put("bench/cas", VALUE)]
            )
            assert result.succeeded, "compare-and-put lost a race it cannot lose"
            mod = result.revision

    return await _timed(ops, run)


async def concurrent_put(store: Store, ops: int) -> float:
    async def worker(w: int) -> None:
        for i in range(w, ops, IN_FLIGHT):
            await store.put(f"bench/conc/{i % KEYS}", VALUE)

    async def run() -> None:
        await asyncio.gather(*(worker(w) for w in range(IN_FLIGHT)))

    return await _timed(ops, run)


async def watch_latency(store: Store, ops: int) -> tuple[float, float]:
    arrivals: asyncio.Queue[float] = asyncio.Queue()
    start = await store.revision() + 1

    async def follow() -> None:
        async for _ in store.watch("bench/watch/", start):
            arrivals.put_nowait(time.perf_counter())

    follower = asyncio.create_task(follow())
    latencies = []
    try:
        for i in range(ops):
            sent = time.perf_counter()
            await store.put(f"bench/watch/{i % KEYS}", VALUE)
            latencies.append((await arrivals.get() - sent) * 1000)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    q = statistics.quantiles(latencies, n=100)
    return q[49], q[98]


async def measure(store: Store, ops: int, phase_timeout: float) -> dict[str, float]:
    async def phase(coro: Awaitable[Any]) -> Any:
        async with asyncio.timeout(phase_timeout):
            return await coro

    try:
        await phase(seq_put(store, min(ops, 200)))  # warm up: connect, open, page cache
        result = {
            "seq_put_per_s": await phase(seq_put(store, ops)),
            "txn_per_s": await phase(txn_cas(store, ops)),
            "concurrent_put_per_s": await phase(concurrent_put(store, ops)),
        }
        p50, p99 = await phase(watch_latency(store, min(ops, 1000)))
        result |= {"watch_p50_ms": p50, "watch_p99_ms": p99}
        return result
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def etcd_on(base: Path) -> AsyncIterator[EtcdCluster]:
    cluster = start_etcd(members=1, base_dir=base)
    try:
        yield cluster
    finally:
        cluster.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="podium-bench-", dir=args.dir))
    results: dict[str, Any] = {
        "ops": args.ops,
        "in_flight": IN_FLIGHT,
        "value_bytes": len(VALUE),
        "disk_dir": str(root),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "backends": {},
    }
    try:
        sqlite = SQLiteStore(root / "sqlite" / "podium.db")
        results["backends"]["sqlite"] = await measure(sqlite, args.ops, args.phase_timeout)
        # a server's store (sqlite:// URL) runs its worker in a process of its own
        child = SQLiteStore(root / "sqlite-process" / "podium.db", worker="process")
        results["backends"]["sqlite_process"] = await measure(child, args.ops, args.phase_timeout)
        if etcd_binary() is None:
            results["etcd"] = "etcd is not installed: skipped"
            return results
        targets = [("etcd", root)]
        if args.shm:
            targets.append(("etcd_tmpfs", Path("/dev/shm")))
        for name, base in targets:
            async with etcd_on(base) as cluster:
                store = EtcdStore(cluster.endpoints)
                results["backends"][name] = await measure(store, args.ops, args.phase_timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["sqlite_vs_etcd"] = ratios(results["backends"])
    return results


def ratios(backends: dict[str, dict[str, float]]) -> dict[str, float]:
    """SQLite over etcd (same disk), from this run: >1 means SQLite is better.

    Throughputs divide sqlite by etcd; latencies divide etcd by sqlite.
    """
    if "sqlite" not in backends or "etcd" not in backends:
        return {}
    sq, et = backends["sqlite"], backends["etcd"]
    out = {k: sq[k] / et[k] for k in ("seq_put_per_s", "txn_per_s", "concurrent_put_per_s")}
    out.update({k: et[k] / sq[k] for k in ("watch_p50_ms", "watch_p99_ms")})
    return {k: round(v, 2) for k, v in out.items()}


def table(results: dict[str, Any]) -> str:
    cols = [
        ("seq_put_per_s", "put/s seq", "{:,.0f}"),
        ("txn_per_s", "txn/s (CAS)", "{:,.0f}"),
        ("concurrent_put_per_s", f"put/s x{IN_FLIGHT}", "{:,.0f}"),
        ("watch_p50_ms", "watch p50 ms", "{:.2f}"),
        ("watch_p99_ms", "watch p99 ms", "{:.2f}"),
    ]
    lines = [f"{'backend':<15}" + "".join(f"{title:>15}" for _, title, _ in cols)]
    for name, row in results["backends"].items():
        lines.append(f"{name:<15}" + "".join(f"{fmt.format(row[k]):>15}" for k, _, fmt in cols))
    lines.append(
        f"({results['ops']} ops each, {results['value_bytes']}-byte values, "
        f"disk dir {results['disk_dir']}, {results['machine']})"
    )
    if "etcd" in results:
        lines.append(results["etcd"])
    if results.get("sqlite_vs_etcd"):
        pairs = ", ".join(f"{k} {v:.2f}x" for k, v in results["sqlite_vs_etcd"].items())
        lines.append(f"sqlite vs etcd (same disk, >1 = sqlite better): {pairs}")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--ops", type=int, default=2000, help="operations per measurement")
    p.add_argument("--dir", default=None, help="folder on the disk to test (default: /tmp)")
    p.add_argument("--no-shm", action="store_true", help="skip etcd on /dev/shm")
    p.add_argument("--phase-timeout", type=float, default=120, help="seconds per measurement")
    args = p.parse_args()
    args.shm = not args.no_shm and Path("/dev/shm").is_dir()
    return args


if __name__ == "__main__":
    arguments = parse()
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome, indent=2) if arguments.json else table(outcome))
