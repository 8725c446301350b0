"""Several servers of one cluster: the client and the agent link fail over between them."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from podium.agent import LinkError
from podium.cli import app as cli_app
from podium.cli._daemons import _server_urls
from podium.client import AgentLink, AsyncPodiumClient, ClientConfig, ClientError
from podium.client._transport import Http

A, B, C = "http://a:7443", "http://b:7443", "http://c:7443"


def server_of(request: httpx.Request) -> str:
    return f"{request.url.scheme}://{request.url.host}:{request.url.port}"


class Cluster:
    """A fake transport for several servers: each one answers, refuses, or times out."""

    def __init__(self, **behaviour: str) -> None:
        self.behaviour = behaviour  # host -> up, refuse, read-timeout, handshake-timeout, ...
        self.calls: list[str] = []  # which server each request went to, in order

    async def handle(self, request: httpx.Request) -> httpx.Response:
        server = server_of(request)
        self.calls.append(server)
        match self.behaviour[request.url.host]:
            case "refuse":
                await asyncio.sleep(0)  # let concurrent calls interleave
                raise httpx.ConnectError("connection refused", request=request)
            case "read-timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            case "handshake-timeout":  # a frozen server: TCP accepted, TLS never answered
                try:
                    raise ssl.SSLWantReadError("The operation did not complete (read)")
                except ssl.SSLError as cause:
                    raise httpx.ConnectTimeout("", request=request) from cause
            case "hang":
                await asyncio.Event().wait()
            case "503":
                return httpx.Response(503, json={"error": "store unavailable"})
        return httpx.Response(200, json={"server": server, "path": request.url.path})

    def http(self, *servers: str) -> Http:
        transport = httpx.MockTransport(self.handle)
        return Http(servers, "t", None, source="/etc/admin.conf", transport=transport)


def switches(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "podium.client"]


async def test_a_refused_request_goes_to_the_next_server_and_stays_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = Cluster(a="refuse", b="up")
    http = cluster.http(A + "/", B)
    assert http.servers == (A, B) and http.server == A
    assert await http.request("GET", "/healthz") == {"server": B, "path": "/healthz"}
    assert http.server == B
    assert (await http.request("GET", "/api/v1/guests"))["server"] == B
    assert cluster.calls == [A, B, B]
    assert switches(caplog) == [f"podium server {A} did not answer (connection refused); using {B}"]
    await http.close()


async def test_a_read_timeout_is_not_resent_but_the_next_call_goes_elsewhere() -> None:
    cluster = Cluster(a="read-timeout", b="up")
    http = cluster.http(A, B)
    with pytest.raises(ClientError) as err:
        await http.request("POST", "/api/v1/agent/h1/keepalive", json_body={"lease": 1})
    assert err.value.status is None and err.value.retryable
    assert str(err.value).startswith(f"podium server at {A} did not answer in time")
    assert cluster.calls == [A]  # the POST may have taken effect: never sent twice
    assert http.server == B
    assert (await http.request("POST", "/api/v1/agent/h1/keepalive"))["server"] == B
    assert cluster.calls == [A, B]
    await http.close()


async def test_all_servers_down_names_every_server_tried_once() -> None:
    cluster = Cluster(a="refuse", b="refuse", c="refuse")
    http = cluster.http(A, B, C)
    with pytest.raises(ClientError) as err:
        await http.request("GET", "/healthz")
    assert cluster.calls == [A, B, C]
    assert err.value.status is None and err.value.retryable
    message = str(err.value)
    assert message.startswith("cannot reach any podium server (")
    assert all(f"{server}: connection refused" in message for server in (A, B, C))
    cluster.behaviour["a"] = "up"
    assert (await http.request("GET", "/healthz"))["server"] == A  # comes round again
    await http.close()


async def test_a_handshake_that_timed_out_fails_over_and_is_not_called_a_trust_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = Cluster(a="handshake-timeout", b="up")
    http = cluster.http(A, B)
    assert (await http.request("GET", "/healthz"))["server"] == B
    assert switches(caplog) == [f"podium server {A} did not answer (ConnectTimeout); using {B}"]
    alone = cluster.http(A)
    with pytest.raises(ClientError) as err:
        await alone.request("GET", "/healthz")
    assert str(err.value).startswith(f"cannot reach podium server at {A} (ConnectTimeout)")
    await http.close()
    await alone.close()


async def test_one_server_behaves_as_before(caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster(a="refuse")
    http = cluster.http(A)
    with pytest.raises(ClientError) as err:
        await http.request("GET", "/healthz")
    assert str(err.value) == (
        f"cannot reach podium server at {A} (connection refused): is it running? check --config"
    )
    assert cluster.calls == [A] and http.server == A and switches(caplog) == []
    await http.close()


async def test_an_error_answer_is_not_a_failover() -> None:
    cluster = Cluster(a="503", b="up")
    http = cluster.http(A, B)
    with pytest.raises(ClientError) as err:
        await http.request("GET", "/healthz")
    assert err.value.status == 503 and cluster.calls == [A] and http.server == A
    await http.close()


async def test_concurrent_failures_switch_once(caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster(a="refuse", b="up")
    http = cluster.http(A, B)
    answers = await asyncio.gather(*(http.request("GET", f"/{i}") for i in range(4)))
    assert {answer["server"] for answer in answers} == {B}
    assert http.server == B and len(switches(caplog)) == 1  # not back to A by a 2nd switch
    await http.close()


async def test_a_call_the_caller_gave_up_on_moves_the_next_call_on() -> None:
    """The agent's keepalive deadline is shorter than a connect timeout: a frozen or
    unreachable server must not keep every later keepalive too."""
    cluster = Cluster(a="hang", b="up")
    http = cluster.http(A, B)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await http.request("POST", "/api/v1/agent/h1/keepalive")
    assert http.server == B
    assert (await http.request("POST", "/api/v1/agent/h1/keepalive"))["server"] == B
    await http.close()


async def test_a_stream_that_cannot_connect_moves_on_and_the_caller_resumes_there() -> None:
    cluster = Cluster(a="refuse", b="up")
    http = cluster.http(A, B)
    with pytest.raises(ClientError, match=f"cannot reach podium server at {A}"):
        async for _ in http.ndjson("/api/v1/events", {"watch": 1}):
            pass
    assert cluster.calls == [A] and http.server == B
    lines = [line async for line in http.ndjson("/api/v1/events", {"watch": 1})]
    assert lines == [{"server": B, "path": "/api/v1/events"}]
    await http.close()


async def test_client_watch_resumes_on_the_next_server(caplog: pytest.LogCaptureFixture) -> None:
    requests: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        server = server_of(request)
        requests.append((server, request.url.params["from"]))
        if server == A and len(requests) > 1:
            raise httpx.ConnectError("connection refused", request=request)  # A died
        lines = (
            [{"type": "ADDED", "revision": 5}, {"type": "BOOKMARK", "revision": 5}]
            if server == A
            else [{"type": "MODIFIED", "revision": 7}, {"type": "ERROR", "error": "stop"}]
        )
        return httpx.Response(200, content=b"".join(json.dumps(x).encode() + b"\n" for x in lines))

    config = ClientConfig(A, None, "t", "/etc/admin.conf", fallbacks=(B,))
    seen = []
    async with AsyncPodiumClient(config, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ClientError, match="stop"):
            async for line in client.watch("guests"):
                seen.append((line["type"], line["revision"]))
    assert requests == [(A, "0"), (A, "6"), (B, "6")]
    assert seen == [("ADDED", 5), ("MODIFIED", 7)]
    assert len(switches(caplog)) == 1


async def test_agent_link_keeps_the_lease_through_another_server() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(server_of(request))
        if request.url.host == "a":
            raise httpx.ConnectError("connection refused", request=request)  # A died
        return httpx.Response(200, json={"ttl": 10})

    link = AgentLink([A, B], "t", None, transport=httpx.MockTransport(handler))
    assert await link.keepalive("h1", 1) == 10
    assert await link.keepalive("h1", 1) == 10
    assert calls == [A, B, B]
    await link.close()


async def test_agent_link_with_every_server_down_raises_link_error() -> None:
    cluster = Cluster(a="refuse", b="refuse")
    link = AgentLink((A, B), "t", None, transport=httpx.MockTransport(cluster.handle))
    with pytest.raises(LinkError, match="cannot reach any podium server"):
        await link.keepalive("h1", 1)
    await link.close()


# -- config ------------------------------------------------------------------------------

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_config_reads_servers_in_order_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "admin.conf"
    path.write_text(
        "server: https://10.0.0.1:7443/\n"
        "servers:\n"
        "  - https://10.0.0.2:7443/\n"
        "  - https://10.0.0.1:7443\n"  # repeats are dropped
        "  - https://10.0.0.3:7443\n"
        "token: pdm_admin_x\n"
    )
    config = ClientConfig.load(str(path))
    assert config.server == "https://10.0.0.1:7443"
    assert config.fallbacks == ("https://10.0.0.2:7443", "https://10.0.0.3:7443")
    assert config.servers == (
        "https://10.0.0.1:7443",
        "https://10.0.0.2:7443",
        "https://10.0.0.3:7443",
    )
    assert ClientConfig.parse(config.to_yaml(), source=str(path)) == config


def test_config_without_servers_has_no_fallbacks() -> None:
    config = ClientConfig.parse("server: https://x:7443\ntoken: t\n")
    assert config.fallbacks == () and config.servers == ("https://x:7443",)
    assert "servers" not in config.to_yaml()
    assert ClientConfig("https://x", PEM, "t", None) == ClientConfig("https://x", PEM, "t")


@pytest.mark.parametrize(
    ("servers", "fragment"),
    [
        ("[ftp://b]", "entry 1 of field 'servers' must be an https:// URL, got 'ftp://b'"),
        ("[https://b, 7]", "entry 2 of field 'servers' must be an https:// URL, got 7"),
        ("https://b", "field 'servers' must be a list of https:// URLs"),
    ],
)
def test_config_rejects_a_bad_servers_entry(tmp_path: Path, servers: str, fragment: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(f"server: https://a\nservers: {servers}\ntoken: t\n")
    with pytest.raises(ClientError) as err:
        ClientConfig.load(str(path))
    assert str(err.value) == f"client config {path}: {fragment}"


async def test_client_uses_every_server_of_its_config() -> None:
    cluster = Cluster(a="refuse", b="refuse", c="up")
    config = ClientConfig(A, None, "t", fallbacks=(B, C))
    async with AsyncPodiumClient(config, transport=httpx.MockTransport(cluster.handle)) as c:
        assert (await c.health())["server"] == C
    assert cluster.calls == [A, B, C]


# -- the agent's --server ----------------------------------------------------------------


def test_agent_server_option_takes_repeats_and_commas() -> None:
    values = ["https://a:7443, https://b:7443/", "https://c:7443", "https://a:7443,"]
    assert _server_urls(values) == ["https://a:7443", "https://b:7443", "https://c:7443"]
    assert _server_urls(["http://[fd00::1]:7443"]) == ["http://[fd00::1]:7443"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["https://a:7443,ftp://b"], "bad --server 'ftp://b': expected an http(s) URL"),
        (["10.0.0.1:7443"], "bad --server '10.0.0.1:7443': expected an http(s) URL"),
        (["https://a:port"], "bad --server 'https://a:port': expected an http(s) URL"),
        ([" , "], "--server is required"),
    ],
)
def test_agent_server_option_rejects_what_is_not_a_url(
    values: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit):
        _server_urls(values)
    assert message in capsys.readouterr().err


def test_agent_command_validates_every_server(tmp_path: Path) -> None:
    args = ["agent", "--server", "https://a:7443", "--server", "https://b:7443,nope"]
    result = CliRunner().invoke(cli_app, [*args, "--token-file", str(tmp_path / "token")])
    assert result.exit_code == 1
    assert "bad --server 'nope': expected an http(s) URL" in result.stderr
