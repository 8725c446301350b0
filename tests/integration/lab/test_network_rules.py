"""Network rules on a 2-host qemu lab: guests on two networks talk only while a rule allows.

``front`` (VLAN 100, 10.10.0.0/24) and ``back`` (VLAN 200, 10.20.0.0/24), one profiled
guest on each, on different hosts. Without a rule a ping from one to the other fails;
``allow: [back]`` on front makes every host route between the two gateways (both ways,
within a bounded time); removing it stops that again, and the hosts' rules go.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.lab.conftest import netns_run
from tests.integration.lab.qemu_lab import Lab, qemu_lab
from tests.support.guest_shell import guest_run

pytestmark = pytest.mark.slow
HOSTS = ("h1", "h2")
SETTLE = 60.0  # seconds a rule change may take to reach every host (agents resync every 5 s)


def _network(name: str, vlan: int, allow: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"vlan": vlan, "ip_pool": f"{name}-ips"}
    if allow is not None:
        spec["allow"] = allow
    return {"kind": "Network", "name": name, "spec": spec}


def _manifests() -> str:
    docs: list[dict[str, Any]] = [
        {"kind": "Pool", "name": "macs",
         "spec": {"type": "mac", "range": "02:00:0b:00:00:00-02:00:0b:00:00:ff"}},
        {"kind": "Pool", "name": "front-ips",
         "spec": {"type": "ipv4", "subnet": "10.10.0.0/24", "range": "10.10.0.10-10.10.0.20",
                  "gateway": "10.10.0.1"}},
        {"kind": "Pool", "name": "back-ips",
         "spec": {"type": "ipv4", "subnet": "10.20.0.0/24", "range": "10.20.0.10-10.20.0.20",
                  "gateway": "10.20.0.1"}},
        _network("front", 100),
        _network("back", 200),
    ]  # fmt: skip
    for net in ("front", "back"):
        docs.append({"kind": "Profile", "name": f"{net}-p",
                     "spec": {"nics": [{"network": net, "mac_pool": "macs"}]}})  # fmt: skip
        request = {"cpu": 1, "memory_mib": 128}
        docs.append({"kind": "Guest", "name": f"{net}-g",
                     "spec": {"profile": f"{net}-p", "request": request}})  # fmt: skip
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with qemu_lab(tmp_path_factory.mktemp("rules"), "--hosts", "2", vlans=True) as lab:
        yield lab


def _ip(lab: Lab, profile: str) -> str:
    items = json.loads(lab.ok("get", "profiles", "-o", "json"))["items"]
    (p,) = [p for p in items if p["name"] == profile]
    return str(p["status"]["identity"]["nics"][0]["ip"]).split("/")[0]


def _pings(lab: Lab, guest: dict[str, Any], address: str) -> bool:
    """One bounded ping from inside ``guest`` (busybox: 2 echoes, 1 s wait)."""
    rc, _ = guest_run(lab.folder(guest), f"ping -c 2 -W 1 {address} >/dev/null", timeout=30)
    return rc == 0


def _until(check: Any, seconds: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled, bounded); AssertionError after ``seconds``."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"{what}: not within {seconds:g} s")


def _rules_on(lab: Lab, host: str) -> bool:
    done = netns_run(f"{lab.guard.prefix}{host}", "nft", "list", "table", "inet", "podium_rules")
    return done.returncode == 0


@pytest.mark.timeout(900)
def test_guests_on_two_networks_talk_only_while_a_rule_allows_it(lab: Lab) -> None:
    lab.ok("apply", "-f", "-", stdin=_manifests())
    guests = lab.wait_running({"front-g", "back-g"}, timeout=300)
    where = {n: guests[n]["status"]["host"] for n in ("front-g", "back-g")}
    if where["front-g"] == where["back-g"]:  # across the fabric: a live migration if needed
        other = next(h for h in HOSTS if h != where["back-g"])
        lab.ok("guest", "migrate", "back-g", "--to", other, timeout=300)
        guests = lab.wait_running({"front-g", "back-g"}, timeout=300)
    front, back = guests["front-g"], guests["back-g"]
    assert front["status"]["host"] != back["status"]["host"]
    front_ip, back_ip = _ip(lab, "front-p"), _ip(lab, "back-p")
    assert front_ip.startswith("10.10.0.") and back_ip.startswith("10.20.0.")
    _until(lambda: guest_run(lab.folder(front), "true", timeout=30)[0] == 0, 120, "front shell")
    _until(lambda: guest_run(lab.folder(back), "true", timeout=30)[0] == 0, 120, "back shell")

    # no rule: different networks do not talk, and no host routes
    assert not _pings(lab, front, back_ip)
    assert not _pings(lab, back, front_ip)
    assert not any(_rules_on(lab, h) for h in HOSTS)

    # the rule: both ways, through the hosts' routers
    lab.ok("apply", "-f", "-", stdin=yaml.safe_dump(_network("front", 100, ["back"])))
    shown = json.loads(lab.ok("get", "networks", "-o", "json"))["items"]
    peers = {n["name"]: n["status"]["peers"] for n in shown}
    assert peers == {"front": ["back"], "back": ["front"]}
    took = _until(lambda: _pings(lab, front, back_ip), SETTLE, "front -> back with the rule")
    _until(lambda: _pings(lab, back, front_ip), SETTLE, "back -> front with the rule")
    assert all(_rules_on(lab, h) for h in HOSTS)
    print(f"rule effective after {took:.1f} s")

    # the rule removed: they stop talking, and the hosts drop their rules and ports
    lab.ok("apply", "-f", "-", stdin=yaml.safe_dump(_network("front", 100)))
    _until(lambda: not any(_rules_on(lab, h) for h in HOSTS), SETTLE, "rules gone from hosts")
    assert not _pings(lab, front, back_ip)
    assert not _pings(lab, back, front_ip)
    for host in HOSTS:
        links = netns_run(f"{lab.guard.prefix}{host}", "ip", "-br", "link").stdout
        assert "rgw" not in links and "rsw" not in links, links
