"""--guest-subnet, --guest-pool, --guest-gateway: a GuestNetwork, or one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.server import ServerError, parse_guest_network
from podium.server.__main__ import main


def test_no_subnet_means_no_guest_network() -> None:
    assert parse_guest_network(None) is None


def test_flags_make_a_guest_network() -> None:
    net = parse_guest_network("10.77.0.0/16", "10.77.1.10 - 10.77.1.250", "10.77.0.1")
    assert net is not None
    assert (str(net.subnet), str(net.first), str(net.last), str(net.gateway)) == (
        "10.77.0.0/16",
        "10.77.1.10",
        "10.77.1.250",
        "10.77.0.1",
    )
    whole = parse_guest_network("10.0.0.0/29")
    assert whole is not None and (str(whole.first), str(whole.last)) == ("10.0.0.1", "10.0.0.6")


@pytest.mark.parametrize(
    ("subnet", "pool", "gateway", "expected"),
    [
        ("10.0.0.1/24", None, None, "bad --guest-subnet '10.0.0.1/24': 10.0.0.1/24 has host bits"),
        ("nonsense", None, None, "bad --guest-subnet 'nonsense'"),
        ("10.0.0.0/24", "10.0.0.5", None, "bad --guest-pool '10.0.0.5': expected FIRST-LAST"),
        ("10.0.0.0/24", "10.0.0.5-10.0.1.9", None, "10.0.1.9 is not inside --guest-subnet"),
        ("10.0.0.0/24", "10.0.0.9-10.0.0.5", None, "start is after its end"),
        ("10.0.0.0/24", "10.0.0.5-x", None, "'x' is not an IP address"),
        ("10.0.0.0/24", None, "10.9.9.9", "bad --guest-gateway '10.9.9.9': 10.9.9.9 is not inside"),
        (None, "10.0.0.5-10.0.0.9", None, "--guest-pool needs --guest-subnet"),
        (None, None, "10.0.0.1", "--guest-gateway needs --guest-subnet"),
    ],
)
def test_bad_flags_say_which_and_why(
    subnet: str | None, pool: str | None, gateway: str | None, expected: str
) -> None:
    with pytest.raises(ServerError) as err:
        parse_guest_network(subnet, pool, gateway)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_server_refuses_bad_flags_before_touching_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--store", f"sqlite:///{tmp_path}/p.db", "--data-dir", str(tmp_path / "d"),
            "--guest-subnet", "10.0.0.0/24", "--guest-pool", "10.0.0.200-10.0.1.5"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: bad --guest-pool '10.0.0.200-10.0.1.5'")
    assert not (tmp_path / "d").exists() and not (tmp_path / "p.db").exists()
