"""What only the SQLite backend promises: durability, clear file errors, bounded history,
and watches that see writes by another process."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from podium.store import (
    Compacted,
    Compare,
    EventType,
    InvalidStoreURL,
    Put,
    StoreError,
    StoreUnavailable,
    bulk_writes,
)
from podium.store._sqlite_process import ProcessWorker
from podium.store.sqlite import SQLiteStore
from tests.integration.store_contract._support import FakeClock, take, wait_until, watching

# A writer that prints each write only once the store acknowledged it, forever.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from podium.store import Put
    from podium.store.sqlite import SQLiteStore

    async def main(path, worker):
        store = SQLiteStore(path, worker=worker)
        lease = await store.grant(3600)
        proc = getattr(store._worker, "_proc", None)
        print("lease", lease.id, proc.pid if proc else 0, flush=True)
        i = 0
        while True:
            i += 1
            if i % 3:
                rev = await store.put(f"k/{i}", b"v%d" % i, lease=lease.id if i % 2 else 0)
            else:
                ops = [Put(f"k/{i}", b"v%d" % i), Put(f"t/{i}", b"")]
                rev = (await store.txn([], ops)).revision
            print("ack", i, rev, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.parametrize("worker", ["thread", "process"])
async def test_kill_9_loses_no_acknowledged_write(tmp_path: Path, worker: str) -> None:
    """kill -9 mid-stream: every acknowledged write is in the file; a worker process
    ends with its parent (its socket closes)."""
    path = tmp_path / "podium.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), worker], stdout=subprocess.PIPE, text=True
    )
    acked: dict[int, int] = {}
    child = 0
    try:
        assert proc.stdout is not None
        _, lease_id, child_pid = proc.stdout.readline().split()
        lease, child = int(lease_id), int(child_pid)
        assert (child != 0) == (worker == "process")
        while len(acked) < 300:
            _, i, rev = proc.stdout.readline().split()
            acked[int(i)] = int(rev)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # right after an acknowledgement, mid-stream
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    store = SQLiteStore(path)
    try:
        for i, rev in acked.items():
            kv = await store.get(f"k/{i}")
            assert kv is not None, f"acknowledged write k/{i} (revision {rev}) was lost"
            assert kv.mod_revision == rev
            assert kv.lease == (lease if i % 3 and i % 2 else 0)
        assert await store.revision() >= max(acked.values())
        assert await store.lease_ttl(lease) > 0  # the lease survived, with a fresh TTL
    finally:
        await store.close()
    if child:
        await wait_until(lambda: _gone(child), timeout=10, what=f"worker {child} to end")


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


async def test_reopening_keeps_revisions_history_and_leases(tmp_path: Path) -> None:
    path = tmp_path / "podium.db"
    clock = FakeClock()
    first = SQLiteStore(path, clock=clock)
    lease = await first.grant(10)
    r1 = await first.put("a", b"1", lease=lease.id)
    r2 = (await first.txn([], [Put("b", b"2"), Put("c", b"3")])).revision
    clock.now += 8  # 2 s left on the lease
    await first.close()

    clock.now += 100  # a long outage: the lease would long be expired
    second = SQLiteStore(path, clock=clock)
    try:
        assert await second.revision() == r2
        assert (await second.get("a")).mod_revision == r1  # type: ignore[union-attr]
        assert await second.lease_ttl(lease.id) == 10  # a fresh full TTL on open
        async with watching(second, "", r1) as stream:
            events = await take(stream, 3)
        assert [(e.kv.key, e.revision) for e in events] == [("a", r1), ("b", r2), ("c", r2)]
        assert await second.put("d", b"4") == r2 + 1
    finally:
        await second.close()


async def test_a_corrupt_file_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "podium.db"
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match=f"{path}.*(corrupt|not a database).*backup"):
        await store.get("k")
    await store.close()


async def test_an_unwritable_path_is_named_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SQLiteStore(blocker / "sub" / "podium.db")  # a folder inside a file
    with pytest.raises(StoreError, match=r"podium\.db.*--store"):
        await store.put("k", b"v")
    await store.close()
    store = SQLiteStore("/proc/podium-test.db")  # even root cannot create files there
    with pytest.raises(StoreError, match=r"/proc/podium-test\.db.*--store"):
        await store.put("k", b"v")
    await store.close()


async def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="not a podium store"):
        await store.revision()
    await store.close()


async def test_history_is_compacted_automatically(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "podium.db", history=10, sweep_interval=0.02)
    try:
        base = await store.revision()
        for i in range(30):
            await store.put("k", b"%d" % i)
        rev = await store.revision()

        async def compacted() -> bool:
            return (await store.status()).compact_revision == rev - 10

        await wait_until(compacted, what="automatic compaction")
        async with watching(store, "k", base + 1) as stream:
            with pytest.raises(Compacted):
                await take(stream, 1)
        async with watching(store, "k", rev - 10) as stream:
            assert len(await take(stream, 11)) == 11
    finally:
        await store.close()


async def test_watch_sees_writes_of_another_process(tmp_path: Path) -> None:
    """Two stores on one file stand in for two processes: only polling links them."""
    path = tmp_path / "podium.db"
    writer, reader = SQLiteStore(path), SQLiteStore(path, poll_interval=0.05)
    try:
        base = await writer.put("x/0", b"")
        async with watching(reader, "x/", base + 1) as stream:
            first = asyncio.ensure_future(take(stream, 2, timeout=5))
            await asyncio.sleep(0.1)
            await writer.put("x/1", b"a")
            await writer.delete("x/0")
            events = await first
        assert [(e.type, e.kv.key) for e in events] == [
            (EventType.PUT, "x/1"),
            (EventType.DELETE, "x/0"),
        ]
    finally:
        await writer.close()
        await reader.close()


async def test_a_failing_write_does_not_fail_its_batch(tmp_path: Path) -> None:
    """Group commit: writes queued together commit together, except the one that fails."""
    store = SQLiteStore(tmp_path / "podium.db")
    try:
        lease = await store.grant(30)
        await store.revoke(lease.id)
        base = await store.revision()
        results = await asyncio.gather(
            store.put("a", b"1"),
            store.put("bad", b"x", lease=lease.id),
            store.put("b", b"2"),
            return_exceptions=True,
        )
        assert results[0] == base + 1
        assert type(results[1]).__name__ == "LeaseNotFound"
        assert results[2] == base + 2
        assert await store.get("bad") is None
    finally:
        await store.close()


async def test_a_watch_interleaves_its_own_writes_and_another_process_in_order(
    tmp_path: Path,
) -> None:
    """In-process writes reach the watch from the commit feed, a foreign writer's only
    through the log: mixed, the watch still sees every revision once, in order, and
    never the writes of a job that failed inside a batch."""
    path = tmp_path / "podium.db"
    own, other = SQLiteStore(path, poll_interval=0.05), SQLiteStore(path)
    try:
        lease = await own.grant(30)
        await own.revoke(lease.id)
        base = await own.put("w/0", b"own")
        async with watching(own, "w/", base + 1) as stream:
            expected: list[tuple[str, bytes]] = []
            for i in range(1, 31):
                writer = other if i % 3 == 0 else own
                if i % 5 == 0:  # a batch where one job fails: its put never happened
                    await asyncio.gather(
                        writer.put(f"w/{i}", b"%d" % i),
                        writer.put(f"w/bad{i}", b"x", lease=lease.id),
                        return_exceptions=True,
                    )
                else:
                    await writer.put(f"w/{i}", b"%d" % i)
                expected.append((f"w/{i}", b"%d" % i))
            events = await take(stream, len(expected), timeout=10)
            assert [(e.kv.key, e.kv.value) for e in events] == expected
            revisions = [e.revision for e in events]
            assert revisions == sorted(set(revisions))
            await own.put("w/last", b"")
            (last,) = await take(stream, 1)
            assert last.kv.key == "w/last"  # nothing else (no failed job's put) came between
    finally:
        await own.close()
        await other.close()


async def test_large_transactions_write_and_read_every_key_once(tmp_path: Path) -> None:
    """Puts go in multi-row statements and compares read keys in IN lists of padded
    sizes: every key of a large transaction lands once, with its own version, and a
    compare on any one of them is judged on that key alone (120: near the op limit)."""
    store = SQLiteStore(tmp_path / "podium.db")
    try:
        keys = [f"m/{i:03d}" for i in range(120)]
        first = await store.txn([], [Put(k, k.encode()) for k in keys[:60]])
        assert first.succeeded
        compares = [Compare(k, "version", "=", 1) for k in keys[:60]] + [
            Compare(k, "version", "=", 0) for k in keys[60:]
        ]
        second = await store.txn(compares, [Put(k, b"again") for k in keys])
        assert second.succeeded
        kvs = (await store.range("m/")).kvs
        assert [kv.key for kv in kvs] == keys
        assert [kv.version for kv in kvs] == [2] * 60 + [1] * 60
        assert all(kv.value == b"again" for kv in kvs)
        lost = await store.txn(
            [*compares[:-1], Compare(keys[-1], "version", "=", 0)], [Put("m/x", b"")]
        )
        assert not lost.succeeded
        assert await store.get("m/x") is None
    finally:
        await store.close()


async def test_a_dead_worker_process_fails_its_jobs_clearly(tmp_path: Path) -> None:
    """The worker process killed: what waited and what comes later fail as
    StoreUnavailable (never hang); the file keeps every acknowledged write."""
    path = tmp_path / "podium.db"
    store = SQLiteStore(path, worker="process")
    try:
        rev = await store.put("a", b"1")
        worker = store._worker
        assert isinstance(worker, ProcessWorker)
        os.kill(worker._proc.pid, signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="worker process"):
            async with asyncio.timeout(10):
                while True:  # the first jobs may still be on their way to the dead child
                    await store.put("b", b"2")
        with pytest.raises(StoreUnavailable, match="worker process"):
            await asyncio.wait_for(store.get("a"), 10)
    finally:
        await store.close()
    again = SQLiteStore(path, worker="process")
    try:
        kv = await again.get("a")
        assert kv is not None and kv.mod_revision == rev
    finally:
        await again.close()
    assert again._worker is not None
    assert isinstance(again._worker, ProcessWorker) and again._worker._proc.returncode == 0


async def test_a_server_store_url_runs_its_worker_in_a_process(tmp_path: Path) -> None:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path}/podium.db")
    thread = SQLiteStore.from_url(f"sqlite:///{tmp_path}/other.db?worker=thread")
    assert (store.worker_kind, thread.worker_kind) == ("process", "thread")
    with pytest.raises(InvalidStoreURL, match="worker must be 'process'"):
        SQLiteStore.from_url(f"sqlite:///{tmp_path}/x.db?worker=fibre")


@pytest.mark.parametrize("worker", ["thread", "process"])
async def test_a_write_overtakes_queued_bulk_writes(tmp_path: Path, worker: str) -> None:
    """200 bulk transactions of 63 puts queued; once the first is acknowledged (the
    worker took its first batch), one plain put: it is acknowledged within a couple of
    small batches, not after the whole queue; every bulk write lands."""
    store = SQLiteStore(tmp_path / "podium.db", worker=worker)
    value = b"x" * 500
    done = 0

    async def bulk(i: int) -> None:
        nonlocal done
        result = await store.txn([], [Put(f"bulk/{i:03d}/{k:02d}", value) for k in range(63)])
        assert result.succeeded
        done += 1

    try:
        await store.put("warm", b"")  # the worker is up
        with bulk_writes():
            tasks = [asyncio.create_task(bulk(i)) for i in range(200)]
        async with asyncio.timeout(30):
            while not done:  # the first batch is done: the rest wait in the queue
                await asyncio.sleep(0.001)
        await store.put("urgent", b"")
        overtaken = 200 - done
        await asyncio.gather(*tasks)
        assert overtaken >= 100, f"the put waited for {200 - overtaken} of 200 bulk writes"
        assert len((await store.range("bulk/")).kvs) == 200 * 63
    finally:
        await store.close()
