"""The lab's layout (names, addresses, labels) and its state file, without making anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import podium.lab
from podium.lab import LabError, LabState, lab_dir, load_state, plan_lab
from podium.lab._procs import Proc
from podium.lab._state import LabServer


def test_exports() -> None:
    assert sorted(podium.lab.__all__) == [
        "DEFAULT_NAME",
        "DEFAULT_SUBNET",
        "DownReport",
        "ETCD3",
        "EtcdMember",
        "HostLayout",
        "LabError",
        "LabInfo",
        "LabLayout",
        "LabServer",
        "LabState",
        "kill_host",
        "lab_dir",
        "lab_down",
        "lab_up",
        "load_state",
        "plan_lab",
        "restart_agent",
    ]


def test_plan_names_addresses_and_labels() -> None:
    layout = plan_lab("lab", 3)
    assert layout.namespaces == ["pdm-lab-fab", "pdm-lab-h1", "pdm-lab-h2", "pdm-lab-h3"]
    assert layout.fabric_address == "10.213.0.1/16"
    assert layout.fabric_listen == "pdm-lab-fab@10.213.0.1:7443"
    assert layout.fabric_url == "https://10.213.0.1:7443"
    assert [h.address for h in layout.hosts] == [
        "10.213.0.17/16",
        "10.213.0.18/16",
        "10.213.0.19/16",
    ]
    assert [h.labels["rack"] for h in layout.hosts] == ["r1", "r2", "r1"]
    assert {h.labels["site"] for h in layout.hosts} == {"s1"}
    assert [h.fabric_port for h in layout.hosts] == ["up-h1", "up-h2", "up-h3"]
    assert layout.guest_range == ("10.213.1.0", "10.213.255.254")
    macs = [layout.fabric_mac, *(h.bridge_mac for h in layout.hosts)]
    assert len(set(macs)) == 4 and all(m.startswith("02:") for m in macs)
    assert plan_lab("lab", 3) == layout  # deterministic
    other = plan_lab("b", 2, "172.20.0.0/22")
    assert other.fabric_address == "172.20.0.1/22" and other.hosts[1].address == "172.20.0.18/22"


@pytest.mark.parametrize(
    ("name", "hosts", "subnet"),
    [("Lab", 1, "10.0.0.0/16"), ("a-b", 1, "10.0.0.0/16"), ("1ab", 1, "10.0.0.0/16"),
     ("lab", 0, "10.0.0.0/16"), ("lab", 240, "10.0.0.0/16"), ("lab", 1, "8.8.0.0/16"),
     ("lab", 1, "10.0.0.0/24"), ("lab", 1, "fd00::/64"), ("lab", 1, "nonsense")],
)  # fmt: skip
def test_bad_plans_are_refused(name: str, hosts: int, subnet: str) -> None:
    with pytest.raises(LabError):
        plan_lab(name, hosts, subnet)


def test_lab_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PODIUM_LAB_DIR", str(tmp_path))
    assert lab_dir("x1") == tmp_path / "x1"
    monkeypatch.delenv("PODIUM_LAB_DIR")
    assert lab_dir("x1") == Path("/var/lib/podium/lab/x1")


def test_state_round_trips_and_is_private(tmp_path: Path) -> None:
    state = LabState(layout=plan_lab("lab", 2), dir=str(tmp_path), driver="sim", store="s")
    state.servers = [
        LabServer(str(tmp_path / "server"), "https://127.0.0.1:5", "https://10.213.0.1:7443",
                  Proc(10, 5, "server 1")),
        LabServer(str(tmp_path / "server2"), "https://127.0.0.1:6", "https://10.213.0.1:7444",
                  Proc(12, 7, "server 2")),
    ]  # fmt: skip
    state.agents["h1"] = Proc(11, 6, "agent h1")
    state.save()
    assert (tmp_path / "lab.json").stat().st_mode & 0o777 == 0o600
    assert load_state(tmp_path) == state
    assert state.server_url == "https://127.0.0.1:5"
    assert state.procs() == [
        Proc(11, 6, "agent h1"),
        Proc(10, 5, "server 1"),
        Proc(12, 7, "server 2"),
    ]
    assert load_state(tmp_path / "none") is None
    (tmp_path / "lab.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(LabError, match="not one this podium wrote"):
        load_state(tmp_path)
    (tmp_path / "lab.json").write_text("{")
    with pytest.raises(LabError, match="cannot read"):
        load_state(tmp_path)


def test_sites_split_hosts_in_blocks_each_with_its_storage_and_replica_target(
    tmp_path: Path,
) -> None:
    from podium.lab._up import REPLICA_ENV, agent_argv, storage_of  # noqa: PLC0415

    layout = plan_lab("lab", 4, sites=2)
    assert [(h.labels["site"], h.labels["rack"]) for h in layout.hosts] == [
        ("s1", "r1"), ("s1", "r2"), ("s2", "r1"), ("s2", "r2"),
    ]  # fmt: skip
    state = LabState(layout=layout, dir=str(tmp_path), driver="sim", store="s")
    h1, _, h3, _ = layout.hosts
    assert storage_of(state, h1) == (tmp_path / "sites/s1/data", tmp_path / "sites/s2/replicas")
    assert storage_of(state, h3) == (tmp_path / "sites/s2/data", tmp_path / "sites/s1/replicas")
    argv, env = agent_argv(state, "ip", h3)
    assert argv[argv.index("--data-dir") + 1] == str(tmp_path / "sites/s2/data")
    assert env[REPLICA_ENV] == str(tmp_path / "sites/s1/replicas")
    one = LabState(layout=plan_lab("lab", 2), dir=str(tmp_path), driver="sim", store="s")
    assert storage_of(one, one.layout.hosts[0]) == (tmp_path / "data", None)
    with pytest.raises(LabError, match="--sites 3: a lab has 1 to --hosts"):
        plan_lab("lab", 2, sites=3)
