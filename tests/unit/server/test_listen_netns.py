"""``--listen-netns NETNS@HOST:PORT``: parsing, and the names it adds to the certificate."""

from __future__ import annotations

import pytest

from podium.server import ServerError, ServerSettings, parse_netns_listen
from podium.server._netns import netns_path


def test_parse_netns_listen() -> None:
    where = parse_netns_listen("pdm-lab-fab@10.213.0.1:7443")
    assert (where.netns, where.address.host, where.address.port) == (
        "pdm-lab-fab",
        "10.213.0.1",
        7443,
    )
    assert str(where) == "pdm-lab-fab@10.213.0.1:7443"
    assert str(parse_netns_listen("ns@[fd00::1]:0")) == "ns@[fd00::1]:0"
    assert ServerSettings(store_url="memory://").extra_listen == ()


@pytest.mark.parametrize(
    "bad",
    ["10.213.0.1:7443", "@10.213.0.1:7443", "ns@10.213.0.1", "ns@0.0.0.0:7443", "a/b@1.2.3.4:1",
     "ns@:7443"],
)  # fmt: skip
def test_bad_netns_listen_is_one_clear_error(bad: str) -> None:
    with pytest.raises(ServerError, match="--listen-netns"):
        parse_netns_listen(bad)


def test_a_missing_namespace_is_named() -> None:
    with pytest.raises(ServerError, match=r"pdm-no-such-ns.*does not exist"):
        netns_path("pdm-no-such-ns")
