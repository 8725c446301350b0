"""podium._threads.call_in_thread: result, exception and timeout come back to the caller."""

from __future__ import annotations

import threading
import time

import pytest

from podium._threads import call_in_thread


def test_runs_on_another_thread_and_returns_its_result() -> None:
    caller = threading.get_ident()
    assert call_in_thread(threading.get_ident, name="t", timeout=5) != caller
    assert call_in_thread(lambda: 42, name="t", timeout=5) == 42


def test_the_exception_of_the_thread_is_raised_in_the_caller() -> None:
    def boom() -> None:
        raise OSError(1, "nope")

    with pytest.raises(OSError, match="nope"):
        call_in_thread(boom, name="t", timeout=5)


def test_a_thread_that_does_not_finish_in_time_raises_timeout() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"slow: not finished after 0\.1 s"):
        call_in_thread(lambda: release.wait(5), name="slow", timeout=0.1)
    assert time.monotonic() - started < 2
    release.set()
