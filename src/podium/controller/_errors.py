"""Controller errors: whether to retry is part of the type (kopf's split)."""

from __future__ import annotations


class ControllerError(Exception):
    """Root of controller errors (``podium.controller``).

    ::

        ControllerError
        ├── TemporaryError   retry the key after ``delay`` seconds (or the backoff)
        └── PermanentError   report a warning event; do not retry until the key changes
    """


class TemporaryError(ControllerError):
    """The reconcile could not finish now; it will be retried."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ControllerError):
    """Retrying will not help until the object changes; an event says why."""
