"""The lab's etcd cluster (``--store etcd3``) without starting anything: ports, argv, state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podium.lab import ETCD3, EtcdMember, LabError, LabState, load_state, plan_lab
from podium.lab._etcd import etcd_binary, member_argv, plan_members, store_url
from podium.lab._procs import Proc


def test_members_get_six_distinct_loopback_ports() -> None:
    members = plan_members()
    assert [m.name for m in members] == ["e1", "e2", "e3"]
    ports = [p for m in members for p in (m.client_port, m.peer_port)]
    assert len(set(ports)) == 6 and all(1024 <= p < 65536 for p in ports)
    assert store_url(members) == "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in members)


def test_member_argv_names_the_whole_cluster_on_loopback(tmp_path: Path) -> None:
    members = [EtcdMember("e1", 2001, 2002), EtcdMember("e2", 2003, 2004)]
    argv = member_argv("/usr/bin/etcd", members[1], members, tmp_path / "e2", "tok")
    assert argv[0] == "/usr/bin/etcd"
    assert "--name=e2" in argv
    assert f"--data-dir={tmp_path / 'e2'}" in argv
    assert "--listen-client-urls=http://127.0.0.1:2003" in argv
    assert "--listen-peer-urls=http://127.0.0.1:2004" in argv
    assert "--initial-cluster=e1=http://127.0.0.1:2002,e2=http://127.0.0.1:2004" in argv
    assert "--initial-cluster-state=new" in argv
    assert not any("0.0.0.0" in a for a in argv)


def test_missing_etcd_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabError, match=r"install etcd-server \(scripts/setup does\)"):
        etcd_binary()
    assert ETCD3 == "etcd3"


def test_state_keeps_the_members_with_their_pids(tmp_path: Path) -> None:
    state = LabState(layout=plan_lab("lab", 1), dir=str(tmp_path), driver="sim", store="x")
    state.etcd = [
        EtcdMember("e1", 2001, 2002, Proc(11, 5, "etcd e1")),
        EtcdMember("e2", 2003, 2004, None),
    ]
    state.save()
    loaded = load_state(tmp_path)
    assert loaded is not None
    assert loaded.etcd == state.etcd
    assert Proc(11, 5, "etcd e1") in loaded.procs()


def test_a_state_without_etcd_loads_with_no_members(tmp_path: Path) -> None:
    state = LabState(layout=plan_lab("lab", 1), dir=str(tmp_path), driver="sim", store="x")
    state.save()
    data = json.loads(state.path.read_text())
    del data["etcd"]
    state.path.write_text(json.dumps(data))
    loaded = load_state(tmp_path)
    assert loaded is not None and loaded.etcd == []
