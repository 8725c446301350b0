"""C1M end to end: guests through the server and its SQLite store until all are bound.

    python bench/c1m.py [--hosts 5000] [--guests 1000000] [--timeout 600] [--json]

::

    podium server (subprocess, SQLite store in a temp dir, host TTL 600 s)
      <── register H simulated hosts through the agent API (join token -> host token),
          keepalives every TTL/4 for each (no assignment watch: nothing runs guests)
      <── podium apply: A apps whose replicas add up to G guests (mixed shapes)
      ──> the app controller creates the guests, placement binds them
    observer: every second, counts guests and bindings straight from the SQLite file
              (read only): the keys the store's log created since its last poll, so
              watching costs the server nothing and the bench little; once the count
              reaches G, checks that every binding names a host

Reports seconds to register, to acknowledge the apply, until every guest exists, until
every guest is bound, the binds per second, and the bench's own CPU seconds while it
waited (``bench_cpu_s``: observer and keepalives; ``recounts``: full key counts the
observer made), and how the keepalives fared meanwhile (``keepalive_p50_ms``,
``keepalive_p99_ms``, ``keepalive_max_ms``, ``keepalive_failed``: does the agents' API
keep up with the rollout?); stops at ``--timeout`` with what it reached. Kills its server by PID and
removes its temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from podium.client import AsyncPodiumClient, ClientConfig
from podium.model import Kind
from podium.state import keys
from tests.support import server as support

HOST_TTL = 600
SHAPES = (  # (cpu, memory_mib, iops, net_mbps) of the apps, cycled
    (1, 512, 50, 10),
    (2, 2048, 100, 20),
    (4, 4096, 200, 50),
    (1, 1024, 100, 10),
    (8, 16384, 400, 100),
)
# A million guests of SHAPES ask for 3.2M vCPU: 5,000 hosts of 1,024 vCPU hold them at
# 62%; with 512 vCPU each (2.56M) only ~80% of the guests could ever be bound.
HOST_CAPACITY = {"cpu": 1024, "memory_mib": 1 << 21, "iops": 200_000, "net_mbps": 100_000}
AGENT_LINKS = 32  # the hosts' requests in flight: one connection each
GUESTS, BINDINGS = keys.object_prefix(Kind.GUEST), keys.BINDINGS
APPLY_BATCH = 50  # Apps per apply (an apply is all or nothing: one bounded transaction)


class _Observer:
    """Live key counts under ``GUESTS`` and ``BINDINGS``, read from the SQLite file.

    One read-only connection. The first poll counts the keys (an index range scan per
    prefix); later polls read only the store's log since the last revision read and add
    its creations (puts with no previous value) minus its deletions, so a poll costs the
    last second's writes rather than a scan of up to a million keys. Each poll is one read
    transaction, so the revision, the compaction point and the log rows agree.
    """

    _META = "SELECT name, value FROM meta WHERE name IN ('revision', 'compact')"
    _COUNT = "SELECT count(*) FROM kv WHERE key >= ? AND key < ?"
    _DELTA = (  # net new keys under each prefix in revisions (:after, :upto]
        "SELECT coalesce(sum(CASE WHEN key >= :g_lo AND key < :g_hi THEN d END), 0),"
        " coalesce(sum(CASE WHEN key >= :b_lo AND key < :b_hi THEN d END), 0)"
        " FROM (SELECT key, CASE type WHEN 0 THEN prev_mod_rev IS NULL ELSE -1 END AS d"
        " FROM log WHERE rev > :after AND rev <= :upto)"
    )

    def __init__(self, db: Path) -> None:
        # isolation_level=None: no implicit transactions; poll() opens its own
        self._db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5, isolation_level=None)
        self._ranges = {"g": _key_range(GUESTS), "b": _key_range(BINDINGS)}
        (g_lo, g_hi), (b_lo, b_hi) = self._ranges.values()
        self._bounds = {"g_lo": g_lo, "g_hi": g_hi, "b_lo": b_lo, "b_hi": b_hi}
        self._rev = 0  # the last revision counted (0: nothing counted yet)
        self.created = self.bound = 0
        self.recounts = 0  # full counts: the first poll, and any after compaction overtook us

    def poll(self) -> tuple[int, int]:
        """(guests, bindings) now."""
        self._db.execute("BEGIN")
        try:
            meta = dict(self._db.execute(self._META).fetchall())
            rev, compact = int(meta["revision"]), int(meta["compact"])
            if not self._rev or self._rev + 1 < compact:
                # First poll, or the store compacted its log (it keeps the last 100,000
                # revisions) past revisions not yet read: their creations are gone from the
                # log, so count the keys again, as the bench did every second before.
                self.created, self.bound = (
                    self._db.execute(self._COUNT, self._ranges[p]).fetchone()[0] for p in "gb"
                )
                self.recounts += 1
            elif rev > self._rev:
                params = {**self._bounds, "after": self._rev, "upto": rev}
                guests, bindings = self._db.execute(self._DELTA, params).fetchone()
                self.created += guests
                self.bound += bindings
            self._rev = rev
        finally:
            self._db.execute("COMMIT")
        return self.created, self.bound

    def bound_to_hosts(self) -> int:
        """Bindings whose JSON value names a host: parses every value (seconds of CPU at a
        million), so the bench asks it only to confirm the end."""
        query = self._COUNT + " AND json_extract(CAST(value AS TEXT), '$.host') IS NOT NULL"
        return int(self._db.execute(query, self._ranges["b"]).fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _key_range(prefix: str) -> tuple[bytes, bytes]:
    """``[lo, hi)`` of the keys under ``prefix`` (keys are UTF-8 BLOBs, in byte order)."""
    return prefix.encode(), (prefix[:-1] + chr(ord(prefix[-1]) + 1)).encode()


async def _register(
    links: list[httpx.AsyncClient], join: str, count: int
) -> list[tuple[str, str, int]]:
    """Register ``count`` hosts, one request in flight per link; return (name, host
    token, lease) for each."""
    out: list[tuple[str, str, int]] = []

    async def work(http: httpx.AsyncClient, share: range) -> None:
        for i in share:
            name = f"sim-{i:05d}"
            body = {"name": name, "capacity": HOST_CAPACITY, "labels": {"rack": f"r{i % 50}"},
                    "driver": "sim", "agent_version": "bench"}  # fmt: skip
            resp = await http.post("/api/v1/agent/register", json=body,
                                   headers={"authorization": f"Bearer {join}"})  # fmt: skip
            resp.raise_for_status()
            data = resp.json()
            out.append((name, data["host_token"], int(data["lease"])))

    n = len(links)
    await asyncio.gather(*(work(http, range(k, count, n)) for k, http in enumerate(links)))
    return out


class _Renewals:
    """How the server answered the keepalives while it worked: seconds each took, and
    how many failed (an error status or no answer), so a run shows whether the agents'
    API kept up with the rollout."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.failed = 0

    def summary(self) -> dict[str, Any]:
        took = sorted(self.seconds)

        def at(q: float) -> float | None:
            return round(took[min(len(took) - 1, int(q * len(took)))] * 1000, 1) if took else None

        return {
            "keepalives": len(took) + self.failed,
            "keepalive_failed": self.failed,
            "keepalive_p50_ms": at(0.50),
            "keepalive_p99_ms": at(0.99),
            "keepalive_max_ms": round(took[-1] * 1000, 1) if took else None,
        }


async def _keepalives(
    links: list[httpx.AsyncClient],
    hosts: list[tuple[str, str, int]],
    since: float,
    renewals: _Renewals,
) -> None:
    """Renew every lease every TTL/4, the first time TTL/4 after ``since`` (registration
    began: every lease is younger), until cancelled. Each link renews its share of the
    hosts one after another: one link alone takes longer than TTL/2 for 5,000 renewals on
    a loaded VM and hosts turn suspect: the bench would measure its own client."""
    interval = HOST_TTL / 4

    async def work(http: httpx.AsyncClient, share: list[tuple[str, str, int]]) -> None:
        for name, token, lease in share:
            start = time.monotonic()
            try:
                resp = await http.post(f"/api/v1/agent/{name}/keepalive", json={"lease": lease},
                                       headers={"authorization": f"Bearer {token}"})  # fmt: skip
            except httpx.HTTPError:
                renewals.failed += 1
                continue
            if resp.is_success:
                renewals.seconds.append(time.monotonic() - start)
            else:
                renewals.failed += 1

    n, due = len(links), since + interval
    while True:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        due = time.monotonic() + interval
        await asyncio.gather(*(work(http, hosts[k::n]) for k, http in enumerate(links)))


async def _links(
    stack: contextlib.AsyncExitStack, base_url: str, tls: ssl.SSLContext | bool
) -> list[httpx.AsyncClient]:
    """``AGENT_LINKS`` clients of one kept-alive connection each, for the hosts' requests.

    Not one client with a pool of ``AGENT_LINKS``: httpx's pool scans all its connections
    on each request, which cost the bench ~2-3x the CPU per request (measured ~5 ms
    against ~1.7 ms per renewal).
    """
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return [
        await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=base_url, verify=tls, timeout=60, trust_env=False, limits=one
            )
        )
        for _ in range(AGENT_LINKS)
    ]


async def _observe(
    observer: _Observer, guests: int, t1: float, deadline: float, say: Any
) -> tuple[float | None, int]:
    """Poll every second until ``guests`` bindings name a host or ``deadline`` passes;
    return (seconds from ``t1`` until every guest existed, or None; bindings reached)."""
    created_at, last = None, (0, 0)
    while time.monotonic() < deadline:
        created, bound = observer.poll()  # (no guest is ever unbound here)
        if bound >= guests:  # the count says done: confirm that each binding names a host
            bound = observer.bound_to_hosts()
        if created >= guests and created_at is None:
            created_at = time.monotonic() - t1
        if (created, bound) != last:
            say(f"+{time.monotonic() - t1:6.1f} s  created {created:>8}  bound {bound:>8}")
            last = (created, bound)
        if bound >= guests:
            break
        await asyncio.sleep(1.0)
    return created_at, last[1]


def _apps(guests: int, per_app: int) -> list[dict[str, Any]]:
    docs = []
    left, i = guests, 0
    while left > 0:
        replicas = min(per_app, left)
        cpu, mem, iops, net = SHAPES[i % len(SHAPES)]
        request = {"cpu": cpu, "memory_mib": mem, "iops": iops, "net_mbps": net}
        spec = {"replicas": replicas, "image": "tiny", "request": request}
        docs.append({"kind": "App", "name": f"c1m-{i:04d}", "spec": spec})
        left -= replicas
        i += 1
    return docs


async def run(
    hosts: int, guests: int, per_app: int, timeout: float, say: Any, *, admission: int = 0
) -> dict[str, Any]:
    """``admission``: the server's --failures-to-tolerate (0: off; on, an apply of a
    million guests places them all virtually before it is acknowledged)."""
    tmp = Path(tempfile.mkdtemp(prefix="podium-c1m-"))
    args = ("--host-ttl", str(HOST_TTL), "--failures-to-tolerate", str(admission))
    server = support.start_server(tmp, args=args)
    db = tmp / "podium.db"
    result: dict[str, Any] = {
        "hosts": hosts, "guests": guests, "apps": -(-guests // per_app), "admission_k": admission,
    }  # fmt: skip
    try:
        config = ClientConfig.load(str(server.config_path))
        tls = ssl.create_default_context(cadata=config.ca_pem) if config.ca_pem else True
        async with AsyncPodiumClient(config) as admin, contextlib.AsyncExitStack() as stack:
            links = await _links(stack, config.server, tls)
            join = (await admin.create_token("join", ttl=3600))["token"]
            t0 = time.monotonic()
            registered = await _register(links, join, hosts)
            result["register_s"] = round(time.monotonic() - t0, 2)
            say(f"{hosts} hosts registered in {result['register_s']} s")
            renewals = _Renewals()
            renew = asyncio.create_task(_keepalives(links, registered, t0, renewals))
            try:
                t1 = time.monotonic()
                docs = _apps(guests, per_app)
                for i in range(0, len(docs), APPLY_BATCH):  # one apply is one transaction
                    await admin.apply(docs[i : i + APPLY_BATCH], source="bench/c1m")
                result["apply_ack_s"] = round(time.monotonic() - t1, 2)
                cpu0 = time.process_time()
                with contextlib.closing(_Observer(db)) as observer:
                    created_at, bound = await _observe(observer, guests, t1, t1 + timeout, say)
                took = time.monotonic() - t1
                result["bench_cpu_s"] = round(time.process_time() - cpu0, 2)
                result["recounts"] = observer.recounts
                result.update(
                    created_s=round(created_at, 2) if created_at is not None else None,
                    bound=bound,
                    all_bound=bound >= guests,
                    bound_s=round(took, 2),
                    binds_per_s=round(bound / took, 1),
                )
            finally:
                renew.cancel()
                await asyncio.gather(renew, return_exceptions=True)
            result.update(renewals.summary())
    finally:
        support.stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--guests", type=int, default=1_000_000)
    parser.add_argument("--per-app", type=int, default=5000, help="replicas per App")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for binds")
    parser.add_argument("--admission", type=int, default=0, help="--failures-to-tolerate K")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    say = (lambda _line: None) if args.json else (lambda line: print(line, flush=True))
    # SIGTERM (timeout, kill) ends like Ctrl-C: the finally blocks stop the server by PID
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = asyncio.run(
        run(args.hosts, args.guests, args.per_app, args.timeout, say, admission=args.admission)
    )
    result["machine"] = f"{platform.node()} {os.cpu_count()} CPUs, {platform.machine()}"
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if result.get("all_bound") else 1


if __name__ == "__main__":
    sys.exit(main())
