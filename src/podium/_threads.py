"""Thread helpers shared by every layer; imports nothing else of podium."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_in_thread(fn: Callable[[], T], *, name: str, timeout: float) -> T:
    """Run ``fn`` on a fresh daemon thread and return its result or raise its exception.

    For work that must not run on the caller's thread: ``setns(2)`` moves only the
    calling thread into a namespace, and blocking netlink calls must not stall an event
    loop. Raises ``TimeoutError`` if ``fn`` has not finished after ``timeout`` seconds
    (the thread is left to finish on its own).
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as err:  # handed to the caller's thread
            failure.append(err)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{name}: not finished after {timeout:g} s")
    if failure:
        raise failure[0]
    return result[0]
