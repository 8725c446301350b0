"""A profile's realised HBA as the qemu driver receives it: two LUNs with their WWNs."""

from __future__ import annotations

from typing import Any

HBA: dict[str, Any] = {
    "wwpn": "50:01:43:80:00:00:00:00",
    "wwnn": "50:01:43:80:00:00:00:01",
    "luns": [
        {"lun": 0, "volume": "db/data", "wwn": "50:01:43:80:00:00:00:02",
         "serial": "pd-db-data", "size_gib": 1},
        {"lun": 1, "volume": "db/logs", "wwn": "50:01:43:80:00:00:00:03",
         "serial": "pd-db-logs", "size_gib": 1},
    ],
}  # fmt: skip
