"""Long operations (live migration, backup): progress while they run, then the outcome.

::

    work (driver.migrate_out / backup) ──on_progress──> newest sample only
       │   pump: every interval, the newest sample if new ──> link (best effort)
       ▼   cancel event set ──> cancel work ──> Cancelled (unless it finished anyway)
    outcome ──> send_final: retry on LinkError with backoff (bounded), drop if refused

Progress and outcome go out from the same task, in order: a late progress report can
never overtake the outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from podium.agent._link import AgentError, LinkError

log = logging.getLogger("podium.agent")

JSON = dict[str, Any]
T = TypeVar("T")

FINAL_ATTEMPTS = 12  # outcome reports: ~35 s of retries with the agent's default backoff


class Cancelled(Exception):
    """An operation was cancelled on request (not by its task being cancelled)."""


@dataclasses.dataclass(slots=True)
class Outgoing:
    """An outgoing live migration in flight; ``cancel`` set: stop it (``reason``)."""

    migration: str
    cancel: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    reason: str = ""


def keep_last(box: list[T]) -> Callable[[T], None]:
    """A progress callback keeping only the newest sample (drivers call it often)."""

    def keep(sample: T) -> None:
        box[:] = [sample]

    return keep


async def pump(
    work: Coroutine[Any, Any, T],
    progress: Callable[[], JSON | None],
    send: Callable[[JSON], Awaitable[object]],
    *,
    interval: float,
    fenced: Callable[[], bool],
    outgoing: Outgoing | None = None,
) -> T:
    """Await ``work`` while sending its newest ``progress()`` at most every ``interval`` s.

    Nothing is sent while ``fenced()``. ``outgoing.cancel`` set: cancel ``work`` and
    raise :class:`Cancelled`, unless it finished anyway (then its result stands).
    Cancelling the caller cancels ``work`` too.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(outgoing.cancel.wait()) if outgoing else None
    next_send = loop.time() + interval
    sent: JSON | None = None
    try:
        while not task.done():
            waits: set[asyncio.Future[Any]] = {task}
            if waiter is not None and not waiter.done():
                waits.add(waiter)
            timeout = max(0.0, next_send - loop.time())
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                break
            if waiter is not None and waiter.done():
                task.cancel()
                await asyncio.wait({task})  # never raises: our own cancellation still does
                if task.cancelled():
                    raise Cancelled(outgoing.reason if outgoing else "cancelled")
                break
            if loop.time() < next_send:
                continue
            next_send = loop.time() + interval
            sample = progress()
            if sample is None or sample == sent or fenced():
                continue
            try:
                await send(sample)
                sent = sample
            except Exception as err:  # progress is best effort; the outcome is not
                log.warning("progress report of %s failed (%s)", sample.get("id"), err)
        return task.result()
    finally:
        for pending in (task, waiter):
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.wait({pending})


async def send_final(
    send: Callable[[JSON], Awaitable[JSON]],
    report: JSON,
    *,
    backoff: Callable[[int], Awaitable[None]],
    what: str,
) -> JSON | None:
    """Send an outcome report until the server takes or refuses it.

    Returns the answer (``{"accepted": false}``: stale, dropped, never sent again), or
    ``None`` if the server stayed unreachable through :data:`FINAL_ATTEMPTS` tries.
    ``what`` names the report in logs.
    """
    for attempt in range(FINAL_ATTEMPTS):
        try:
            answer = await send(report)
        except LinkError as err:
            log.warning("%s: cannot report %s (%s)", what, report["state"], err)
            await backoff(attempt)
            continue
        except AgentError as err:  # the server refuses it: asking again will not help
            log.warning("%s: %s report refused (%s)", what, report["state"], err)
            return {"accepted": False, "reason": str(err)}
        if not answer.get("accepted", False):
            reason = answer.get("reason", "stale")
            log.info("%s: %s report dropped (%s)", what, report["state"], reason)
        return answer
    log.error("%s: gave up reporting %s", what, report["state"])
    return None


def tail(text: str, limit: int) -> str:
    """The last ``limit`` bytes of ``text`` (UTF-8), cut at a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[-limit:].decode(errors="ignore")
