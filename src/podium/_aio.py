"""Asyncio helpers shared by every layer; imports nothing else of podium.

The one way podium starts long-lived asyncio tasks (agent and controllers alike).

A long-lived task runs until cancelled. If it returns, that is a bug: it raises
:class:`TaskExited`. If it raises, the error is logged with its traceback and re-raised,
so the enclosing ``TaskGroup`` cancels its siblings and surfaces the failure instead
of a component dying silently. ``CancelledError`` always passes through untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("podium.tasks")


class TaskExited(RuntimeError):
    """A long-lived task returned although it should run until cancelled."""


def supervise(
    group: asyncio.TaskGroup,
    coro: Coroutine[Any, Any, object],
    *,
    name: str,
    logger: logging.Logger = log,
) -> asyncio.Task[None]:
    """Start ``coro`` in ``group`` as a long-lived task named ``name``."""

    async def guarded() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException:
            logger.exception("task %s failed", name)
            raise
        logger.error("task %s exited although it should run until cancelled", name)
        raise TaskExited(f"task {name} exited unexpectedly")

    return group.create_task(guarded(), name=name)
