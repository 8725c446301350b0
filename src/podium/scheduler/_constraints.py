"""Filters for an app's placement constraints: taints/tolerations and ``near``.

::

    TaintFilter   host taints (n, T) bool  &  ~tolerated (T,)  ──any──> rejected
                  (one mask per distinct tolerations tuple, memoised for the batch)
    NearFilter    OR over near apps of (replicas per host > 0); no app placed: no constraint
    SiteFilter    host site code (n,) == code of the guest's site (memoised per site)
"""

from __future__ import annotations

import numpy as np

from podium.model import toleration_matches
from podium.scheduler._plugins import BatchState, Phrases
from podium.scheduler._table import Bools, Floats, GuestRequest, HostTable


def _untolerated(table: HostTable, tolerations: tuple[str, ...]) -> Bools:
    """Per taint column: True where no toleration of the guest matches it."""
    return np.array(
        [
            not any(toleration_matches(tol, key, value) for tol in tolerations)
            for key, value in table.taint_names
        ],
        dtype=np.bool_,
    ).reshape(len(table.taint_names))


class TaintFilter:
    """A host with taints takes only guests that tolerate every one of them.

    Taints reserve dedicated hosts (GPUs, a batch pool): nothing lands there by accident.
    """

    name = "taints"

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        key = "taints:" + "\0".join(sorted(guest.tolerations))
        mask = batch.memo.get(key)
        if mask is None:
            table = batch.table
            bad = _untolerated(table, guest.tolerations)
            mask = np.logical_not(table.tainted[:, bad].any(axis=1))
            batch.memo[key] = mask
        return mask

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        table = batch.table
        bad = _untolerated(table, guest.tolerations)
        hits = table.tainted[rejected] & bad  # every rejected row has at least one hit
        first = np.argmax(hits, axis=1)  # each host counted once, by its first such taint
        counts = np.bincount(first, minlength=len(table.taint_names))
        return [
            (int(c), f"had taint {k}={v} not tolerated")
            for (k, v), c in zip(table.taint_names, counts, strict=True)
        ]


class NearFilter:
    """Only hosts that already run a guest of one of the guest's ``near`` apps.

    Guests placed earlier in the same batch count. While none of those apps has a
    guest on any host, there is no constraint (the first of a pair goes anywhere).
    """

    name = "near"

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        n = len(batch.table)
        mask = np.zeros(n, dtype=np.bool_)
        for app in guest.near:  # a handful of apps, each an O(hosts) numpy op
            counts = batch.app_counts.get(app)
            if counts is not None:
                mask |= counts > 0
        if not guest.near or not mask.any():
            return np.ones(n, dtype=np.bool_)
        return mask

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        apps = ", ".join(guest.near)
        noun = "app" if len(guest.near) == 1 else "apps"
        return [(int(np.count_nonzero(rejected)), f"ran no guest of {noun} {apps} (near)")]


class SiteFilter:
    """A guest pinned to a site lands only on hosts of that site.

    A site's guests use that site's storage: restarting one on another site's host
    would boot it on an empty volume. Moving guests between sites is ``podium dr``'s
    job, which re-pins them after restoring their volumes there.
    """

    name = "site"

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        n = len(batch.table)
        if guest.site is None:
            return np.ones(n, dtype=np.bool_)
        key = "site:" + guest.site
        mask = batch.memo.get(key)
        if mask is None:
            table = batch.table
            names = table.site_names
            code = names.index(guest.site) if guest.site in names else -1
            mask = table.site == code
            batch.memo[key] = mask
        return mask

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        return [(int(np.count_nonzero(rejected)), f"were not in site {guest.site} (site)")]
