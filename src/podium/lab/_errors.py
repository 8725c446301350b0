"""The lab's one exception."""

from __future__ import annotations


class LabError(Exception):
    """``podium lab`` could not do what it was asked; ``str()`` says what and what to do.

    ::

        LabError                 (wraps NetworkError, OSError, ClientError as its cause)
    """
