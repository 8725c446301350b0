"""Rendering of API objects: table, json, yaml."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

OUTPUTS = ("table", "json", "yaml")


def _age(since: float) -> str:
    if not since:
        return "-"
    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _request(spec: dict[str, Any]) -> str:
    r = spec.get("request") or spec.get("capacity") or {}
    return (
        f"{r.get('cpu', 0):g}cpu {r.get('memory_mib', 0)}Mi "
        f"{r.get('iops', 0)}io {r.get('net_mbps', 0)}Mb"
    )


Rows = tuple[list[str], list[list[str]]]


def _pool_rows(items: list[dict[str, Any]]) -> Rows:
    header = ["NAME", "TYPE", "RANGE", "SIZE", "USED", "FREE"]
    rows = [
        [
            i["name"],
            i["spec"].get("type", "-"),
            i["spec"].get("range", "-"),
            str(i["status"].get("size", "-")),
            str(i["status"].get("used", "-")),
            str(i["status"].get("free", "-")),
        ]
        for i in items
    ]
    return header, rows


def _network_rows(items: list[dict[str, Any]]) -> Rows:
    header = ["NAME", "VLAN", "SUBNET", "GATEWAY", "IP POOL", "PROFILES"]
    rows = []
    for i in items:
        ident = i["status"].get("identity") or {}
        rows.append(
            [
                i["name"],
                str(ident.get("vlan") or "-"),
                ident.get("subnet") or "-",
                ident.get("gateway") or "-",
                i["spec"].get("ip_pool") or "-",
                str(i["status"].get("profiles", 0)),
            ]
        )
    return header, rows


def _profile_rows(items: list[dict[str, Any]]) -> Rows:
    header = ["NAME", "GUEST", "HOST", "MACS", "IPS", "WWPNS"]
    rows = []
    for i in items:
        s = i["status"]
        ident = s.get("identity") or {}
        nics = ident.get("nics", [])
        rows.append(
            [
                i["name"],
                s.get("guest") or "-",
                s.get("host") or "-",
                ",".join(n.get("mac", "") for n in nics) or "-",
                ",".join((n.get("ip") or "-").split("/")[0] for n in nics) or "-",
                ",".join(h.get("wwpn", "") for h in ident.get("hbas", [])) or "-",
            ]
        )
    return header, rows


_IDENTITY_ROWS = {"Pool": _pool_rows, "Network": _network_rows, "Profile": _profile_rows}


def _rows(kind: str, items: list[dict[str, Any]]) -> Rows:
    if kind == "Guest":
        header = ["NAME", "STATE", "HOST", "EPOCH", "APP", "REQUEST", "AGE", "MESSAGE"]
        rows = [
            [
                i["name"],
                i["status"]["state"],
                i["status"].get("host") or "-",
                str(i["status"].get("epoch", 0)),
                i.get("owner") or "-",
                _request(i["spec"]),
                _age(i["status"].get("since", 0)),
                i["status"].get("message", "") if i["status"]["state"] != "running" else "",
            ]
            for i in items
        ]
    elif kind == "Host":
        header = ["NAME", "STATE", "GUESTS", "CAPACITY", "ALLOCATED", "RACK", "SITE", "AGE"]
        rows = []
        for i in items:
            s = i["status"]
            state = s["state"] + (",cordoned" if s.get("cordoned") else "")
            rows.append(
                [
                    i["name"],
                    state,
                    str(s.get("guests", 0)),
                    _request({"capacity": s.get("capacity", {})}),
                    _request({"capacity": s.get("allocated", {})}),
                    s.get("labels", {}).get("rack", "-"),
                    s.get("labels", {}).get("site", "-"),
                    _age(s.get("since", 0)),
                ]
            )
    elif kind in _IDENTITY_ROWS:
        header, rows = _IDENTITY_ROWS[kind](items)
    else:
        header = ["NAME", "REPLICAS", "RUNNING", "SPREAD", "REQUEST", "PRIORITY"]
        rows = [
            [
                i["name"],
                str(i["spec"].get("replicas", 0)),
                str(i["status"].get("running", 0)),
                i["spec"].get("spread") or "-",
                _request(i["spec"]),
                str(i["spec"].get("priority", 0)),
            ]
            for i in items
        ]
    return header, rows


def render(kind: str, items: list[dict[str, Any]], output: str, console: Console) -> None:
    """Print objects of one kind in the requested format (``-o``)."""
    if output == "json":
        print(json.dumps({"items": items}, indent=2))
        return
    if output == "yaml":
        print(yaml.safe_dump({"items": items}, sort_keys=False), end="")
        return
    header, rows = _rows(kind, items)
    if not rows:
        console.print(f"No {kind.lower()}s.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def render_event(event: dict[str, Any], console: Console) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    style = "yellow" if event.get("type") == "Warning" else ""
    console.print(
        f"{stamp}  {event.get('reason', ''):<16} {event.get('kind', '')}/{event.get('name', '')}"
        f"  {event.get('message', '')}",
        style=style,
        highlight=False,
    )
