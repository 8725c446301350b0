"""C1M end to end: guests through the server and its SQLite store until all are bound.

    python bench/c1m.py [--hosts 5000] [--guests 1000000] [--timeout 600] [--json]

::

    podium server (subprocess, SQLite store in a temp dir, host TTL 600 s)
      <── register H simulated hosts through the agent API (join token -> host token),
          keepalives every TTL/4 for each (no assignment watch: nothing runs guests)
      <── podium apply: A apps whose replicas add up to G guests (mixed shapes)
      ──> the app controller creates the guests, placement binds them
    observer: counts bound bindings every second straight from the SQLite file (read
              only), so watching costs the server nothing

Reports seconds to register, to acknowledge the apply, until every guest exists, until
every guest is bound, and the binds per second; stops at ``--timeout`` with what it
reached. Kills its server by PID and removes its temp dir.
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
REGISTER_IN_FLIGHT = 32
APPLY_BATCH = 50  # Apps per apply (an apply is all or nothing: one bounded transaction)


def _count(db: Path, prefix: str, *, bound: bool = False) -> int:
    """Keys under ``prefix`` (bound: whose JSON value names a host), read-only.

    Counting keys is an index range scan; ``bound`` parses every value, which costs
    seconds of CPU at a million keys, so the observer asks it only to confirm the end.
    """
    uri = f"file:{db}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        where = "key >= ? AND key < ?"
        if bound:
            where += " AND json_extract(CAST(value AS TEXT), '$.host') IS NOT NULL"
        query = f"SELECT count(*) FROM kv WHERE {where}"
        row = conn.execute(query, (prefix.encode(), hi.encode())).fetchone()
    return int(row[0])


async def _register(http: httpx.AsyncClient, join: str, count: int) -> list[tuple[str, str, int]]:
    """Register ``count`` hosts; return (name, host token, lease) for each."""
    out: list[tuple[str, str, int]] = []
    gate = asyncio.Semaphore(REGISTER_IN_FLIGHT)

    async def one(i: int) -> None:
        name = f"sim-{i:05d}"
        body = {"name": name, "capacity": HOST_CAPACITY, "labels": {"rack": f"r{i % 50}"},
                "driver": "sim", "agent_version": "bench"}  # fmt: skip
        async with gate:
            resp = await http.post("/api/v1/agent/register", json=body,
                                   headers={"authorization": f"Bearer {join}"})  # fmt: skip
        resp.raise_for_status()
        data = resp.json()
        out.append((name, data["host_token"], int(data["lease"])))

    await asyncio.gather(*(one(i) for i in range(count)))
    return out


async def _keepalives(http: httpx.AsyncClient, hosts: list[tuple[str, str, int]]) -> None:
    """Renew every lease every TTL/4, ``REGISTER_IN_FLIGHT`` at a time (runs until
    cancelled). Sent one after another, 5,000 renewals outlast TTL/2 on a loaded VM
    and hosts turn suspect: the bench would measure its own client."""
    interval = HOST_TTL / 4
    gate = asyncio.Semaphore(REGISTER_IN_FLIGHT)

    async def renew(name: str, token: str, lease: int) -> None:
        async with gate:
            with contextlib.suppress(httpx.HTTPError):
                await http.post(f"/api/v1/agent/{name}/keepalive", json={"lease": lease},
                                headers={"authorization": f"Bearer {token}"})  # fmt: skip

    while True:
        started = time.monotonic()
        await asyncio.gather(*(renew(*host) for host in hosts))
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


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
        async with (
            AsyncPodiumClient(config) as admin,
            httpx.AsyncClient(
                base_url=config.server, verify=tls, timeout=60, trust_env=False
            ) as http,
        ):
            join = (await admin.create_token("join", ttl=3600))["token"]
            t0 = time.monotonic()
            registered = await _register(http, join, hosts)
            result["register_s"] = round(time.monotonic() - t0, 2)
            say(f"{hosts} hosts registered in {result['register_s']} s")
            renew = asyncio.create_task(_keepalives(http, registered))
            try:
                t1 = time.monotonic()
                docs = _apps(guests, per_app)
                for i in range(0, len(docs), APPLY_BATCH):  # one apply is one transaction
                    await admin.apply(docs[i : i + APPLY_BATCH], source="bench/c1m")
                result["apply_ack_s"] = round(time.monotonic() - t1, 2)
                deadline, created_at, last = t1 + timeout, None, (0, 0)
                while time.monotonic() < deadline:
                    created = _count(db, "/podium/objects/Guest/")
                    bound = _count(db, "/podium/bindings/")  # (no guest is ever unbound here)
                    if bound >= guests:
                        bound = _count(db, "/podium/bindings/", bound=True)
                    if created >= guests and created_at is None:
                        created_at = time.monotonic() - t1
                    if (created, bound) != last:
                        at = time.monotonic() - t1
                        say(f"+{at:6.1f} s  created {created:>8}  bound {bound:>8}")
                        last = (created, bound)
                    if bound >= guests:
                        break
                    await asyncio.sleep(1.0)
                took = time.monotonic() - t1
                result.update(
                    created_s=round(created_at, 2) if created_at is not None else None,
                    bound=last[1],
                    all_bound=last[1] >= guests,
                    bound_s=round(took, 2),
                    binds_per_s=round(last[1] / took, 1),
                )
            finally:
                renew.cancel()
                await asyncio.gather(renew, return_exceptions=True)
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
