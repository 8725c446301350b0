"""``--store`` URLs: what each backend accepts, and the errors that say how to fix one."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.store import BACKENDS, InvalidStoreURL, open_store
from podium.store.etcd import EtcdStore
from podium.store.memory import MemoryStore
from podium.store.sqlite import DEFAULT_HISTORY, SQLiteStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/podium/podium.db", "/var/lib/podium/podium.db"),
        ("sqlite:////var/lib/podium/podium.db", "/var/lib/podium/podium.db"),
        ("sqlite:///tmp/with%20space.db", "/tmp/with space.db"),
    ],
)
def test_sqlite_absolute_paths(url: str, path: str) -> None:
    assert SQLiteStore.from_url(url).path == Path(path)


@pytest.mark.parametrize("url", ["sqlite:rel/podium.db", "sqlite://./rel/podium.db"])
def test_sqlite_relative_paths_resolve_against_the_working_directory(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteStore.from_url(url).path == tmp_path / "rel" / "podium.db"


def test_sqlite_home_expands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert SQLiteStore.from_url("sqlite://~/podium.db").path == tmp_path / "podium.db"


def test_sqlite_history_option() -> None:
    assert SQLiteStore.from_url("sqlite:///x.db")._history == DEFAULT_HISTORY
    assert SQLiteStore.from_url("sqlite:///x.db?history=500")._history == 500


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?history=0", "history"),
        ("sqlite:///x.db?history=lots", "history"),
        ("sqlite:///x.db?histroy=5", "unknown options"),
    ],
)
def test_sqlite_bad_urls_say_what_is_wrong(url: str, hint: str) -> None:
    with pytest.raises(InvalidStoreURL, match=hint):
        SQLiteStore.from_url(url)


@pytest.mark.parametrize(
    ("url", "endpoints", "timeout"),
    [
        ("etcd://127.0.0.1:2379", ("127.0.0.1:2379",), 5.0),
        ("etcd://a:1,b:2, c:3", ("a:1", "b:2", "c:3"), 5.0),
        ("etcd://etcd.example", ("etcd.example:2379",), 5.0),
        ("etcd://[::1]:2380,[::1]", ("[::1]:2380", "[::1]:2379"), 5.0),
        ("etcd://h:1?timeout=0.5", ("h:1",), 0.5),
    ],
)
def test_etcd_endpoints(url: str, endpoints: tuple[str, ...], timeout: float) -> None:
    store = EtcdStore.from_url(url)
    assert store.endpoints == endpoints
    assert store._timeout == timeout


@pytest.mark.parametrize(
    "url",
    [
        "etcd://",
        "etcd://h:port",
        "etcd://h:0",
        "etcd://h:70000",
        "etcd://user:pw@h:1",
        "etcd://h:1/prefix",
        "etcd://h:1?timeout=-1",
        "etcd://h:1?tls=1",
    ],
)
def test_etcd_bad_urls(url: str) -> None:
    with pytest.raises(InvalidStoreURL):
        EtcdStore.from_url(url)


def test_registry_opens_each_backend_without_contacting_it(tmp_path: Path) -> None:
    assert sorted(BACKENDS) == ["etcd", "memory", "sqlite"]
    assert isinstance(open_store(f"sqlite:///{tmp_path}/p.db"), SQLiteStore)
    assert not (tmp_path / "p.db").exists()  # opened lazily, on the first operation
    assert isinstance(open_store("etcd://127.0.0.1:1"), EtcdStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    with pytest.raises(InvalidStoreURL, match="sqlite:///"):
        open_store("postgres://db/podium")
