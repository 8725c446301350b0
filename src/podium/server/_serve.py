"""``serve()``: the ``podium server`` process inside the caller's event loop.

::

    open store ──> answers? ──no──> ServerError("store ... did not answer: ...")
        │ yes
    bind socket (port 0: the OS picks) ──> TLS material ──> admin token + admin.conf
        │   + one socket per --listen-netns NETNS@HOST:PORT, bound inside NETNS (_netns)
        │
    uvicorn (our loop, our socket) ──started──> ready line
        │                                        controllers (while leading)
    SIGTERM/SIGINT or cancel ──> stop controllers ──> end watch streams ──> drain HTTP
                             ──> close store
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from podium.api import Metrics, context_of, create_app
from podium.server._admin import ensure_admin_config
from podium.server._controllers import ControllerRunner, LeaderLoop
from podium.server._netns import bind_in_netns
from podium.server._settings import (
    ListenAddress,
    NetnsListen,
    ServerError,
    ServerSettings,
    parse_guest_network,
    parse_listen,
    parse_netns_listen,
)
from podium.server._tls import TlsFiles, ensure_tls, wanted_names
from podium.state import ClusterState, GuestNetwork
from podium.store import InvalidStoreURL, Store, StoreError, open_store

if TYPE_CHECKING:
    from podium.server._placement import PlacementServices

log = logging.getLogger(__name__)

STARTUP_POLL = 0.02


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _store_error(settings: ServerSettings, err: BaseException) -> ServerError:
    cause = str(err) or f"no answer within {settings.store_timeout:g} s"
    return ServerError(
        f"store {settings.store_url} did not answer: {cause}; is it running? check --store"
    )


async def _check_store(store: Store, settings: ServerSettings) -> None:
    try:
        async with asyncio.timeout(settings.store_timeout):
            await store.status()
    except Exception as err:  # whatever the backend raises, it did not answer
        raise _store_error(settings, err) from err


def _tls(data_dir: Path, names: list[str]) -> TlsFiles:
    try:
        return ensure_tls(data_dir, names)
    except OSError as err:
        raise ServerError(
            f"cannot write TLS material in --data-dir {data_dir}: {err.strerror or err}"
        ) from err


def _bind(address: ListenAddress, listen: str) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise ServerError(f"cannot listen on {listen}: {err}; check --listen") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except OSError as err:
        sock.close()
        reason = err.strerror or str(err)
        raise ServerError(f"cannot listen on {listen}: {reason}; pick another --listen") from err
    return sock


def _resolve_runner(
    settings: ServerSettings,
    run_controllers: ControllerRunner | None,
    is_leader: Callable[[], bool] | None,
    metrics: Metrics,
    services: PlacementServices | None = None,
) -> tuple[ControllerRunner | None, Callable[[], bool]]:
    if not settings.controllers:
        return None, lambda: False
    if run_controllers is not None:
        return run_controllers, is_leader or (lambda: False)
    identity = settings.identity or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    if settings.max_migrations < 1 or settings.max_migrations_per_host < 1:
        raise ServerError(
            "--max-migrations and --max-migrations-per-host must be at least 1 "
            f"(got {settings.max_migrations} and {settings.max_migrations_per_host})"
        )
    suspect_after = settings.host_suspect_after
    if suspect_after is not None and not 0 < suspect_after < settings.host_ttl:
        raise ServerError(
            f"--host-suspect-after must be above 0 and below --host-ttl ({settings.host_ttl} s), "
            f"got {suspect_after:g}"
        )
    loop = LeaderLoop(
        host_ttl=settings.host_ttl,
        host_suspect_after=suspect_after,
        leader_ttl=settings.leader_ttl,
        identity=identity,
        metrics=metrics,
        max_migrations=settings.max_migrations,
        max_migrations_per_host=settings.max_migrations_per_host,
        migration_prepare_timeout=settings.migration_prepare_timeout,
        controllers=services.controllers if services else None,
        wrap_scheduler=services.wrap_scheduler if services else (lambda s: s),
    )
    loop.resolve()
    return loop, lambda: loop.leading


async def serve(
    settings: ServerSettings,
    *,
    ready: Callable[[str], None] | None = None,
    run_controllers: ControllerRunner | None = None,
    is_leader: Callable[[], bool] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run ``podium server`` until SIGTERM/SIGINT (or until cancelled), then stop gracefully.

    ``ready`` receives the one-line "listening" message once the server accepts
    connections (default: print it to stdout). ``run_controllers`` replaces the
    default leader-elected :class:`~podium.controller.ControllerManager` (tests);
    ``is_leader`` then tells ``/healthz`` whether it leads. ``handle_signals``
    False leaves SIGTERM/SIGINT alone (when embedded). Raises :class:`ServerError`.
    """
    address = parse_listen(settings.listen)
    extra = [parse_netns_listen(text) for text in settings.extra_listen]
    guest_network = parse_guest_network(
        settings.guest_subnet, settings.guest_pool, settings.guest_gateway
    )
    try:
        store = open_store(settings.store_url)
    except InvalidStoreURL as err:
        raise ServerError(f"{err}; check --store") from err
    except ImportError as err:
        raise ServerError(
            f"store {settings.store_url}: its backend cannot be loaded ({err}); reinstall podium"
        ) from err
    try:
        await _check_store(store, settings)
        await _run(
            store=store,
            address=address,
            extra=extra,
            settings=settings,
            guest_network=guest_network,
            ready=ready,
            run_controllers=run_controllers,
            is_leader=is_leader,
            handle_signals=handle_signals,
        )
    finally:
        await store.close()


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise ServerError(f"cannot create --data-dir {data_dir}: {err.strerror}") from err


async def _run(
    *,
    store: Store,
    address: ListenAddress,
    extra: list[NetnsListen],
    settings: ServerSettings,
    guest_network: GuestNetwork | None,
    ready: Callable[[str], None] | None,
    run_controllers: ControllerRunner | None,
    is_leader: Callable[[], bool] | None,
    handle_signals: bool,
) -> None:
    metrics = Metrics()
    from podium.server._placement import placement_services  # noqa: PLC0415 (see LeaderLoop)

    services = placement_services(settings)
    runner, leading = _resolve_runner(settings, run_controllers, is_leader, metrics, services)
    data_dir = Path(settings.data_dir)
    _prepare_data_dir(data_dir)
    sockets = [_bind(address, settings.listen)]
    try:
        for where in extra:
            sockets.append(bind_in_netns(where, _bind))
        port = sockets[0].getsockname()[1]
        ca_pem = cert = key = None
        if settings.insecure:
            if not address.is_loopback:
                log.warning("serving plain HTTP on %s: tokens cross the network in clear", port)
        else:
            names = [*settings.sans, *(where.address.host for where in extra)]
            tls = _tls(data_dir, wanted_names(address.host, names))
            ca_pem, cert, key = tls.ca_pem, str(tls.cert), str(tls.key)
        url = address.url("http" if settings.insecure else "https", port)
        state = ClusterState(store, guest_network=guest_network)
        conf_path = data_dir / "admin.conf"
        try:
            await ensure_admin_config(state, conf_path, url, ca_pem)
        except StoreError as err:
            raise _store_error(settings, err) from err
        except OSError as err:
            raise ServerError(f"cannot write {conf_path}: {err.strerror or err}") from err
        app = create_app(
            state,
            metrics=metrics,
            host_ttl=settings.host_ttl,
            is_leader=leading,
            heartbeat=settings.heartbeat,
            admission=services.admission,
            rebalancer=services.rebalancer,
        )
        config = uvicorn.Config(
            app,
            ssl_certfile=cert,
            ssl_keyfile=key,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    also = "".join(
        f", also on {_bound(where, sock)}" for where, sock in zip(extra, sockets[1:], strict=True)
    )
    line = (
        f"podium server listening on {url} (store {settings.store_url}, config {conf_path}{also})"
    )
    await _supervise(
        _Uvicorn(config),
        sockets,
        close_streams=context_of(app).close_streams,
        runner=runner,
        state=state,
        announce=lambda: (ready or _print)(line),
        handle_signals=handle_signals,
    )


def _bound(where: NetnsListen, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return str(NetnsListen(where.netns, ListenAddress(where.address.host, port)))


def _print(line: str) -> None:
    print(line, flush=True)


async def _supervise(
    server: _Uvicorn,
    sockets: list[socket.socket],
    *,
    close_streams: Callable[[], None],
    runner: ControllerRunner | None,
    state: ClusterState,
    announce: Callable[[], None],
    handle_signals: bool,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    web = loop.create_task(server.serve(sockets=sockets), name="podium-http")
    controllers: asyncio.Task[None] | None = None
    stopper = loop.create_task(stop.wait(), name="podium-stop")
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()

    def on_signal() -> None:
        if stop.is_set():
            server.force_exit = True  # a second signal: stop waiting for connections
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    failure: BaseException | None = None
    try:
        while not server.started:
            if web.done():
                web.result()  # raises what stopped it
                raise ServerError("the HTTP server stopped while starting; see the log above")
            await asyncio.sleep(STARTUP_POLL)
        if runner is not None:
            controllers = loop.create_task(
                _call(runner, state, state.store), name="podium-controllers"
            )
        announce()
        waiting = {web, stopper} | ({controllers} if controllers else set())
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if controllers in done and controllers is not None and not controllers.cancelled():
            failure = controllers.exception()
        if web in done and not web.cancelled():
            failure = failure or web.exception()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        stopper.cancel()
        await _shutdown(server, web, controllers, close_streams)
    if failure is not None:
        raise ServerError(f"server stopped: {failure}") from failure


async def _call(runner: ControllerRunner, state: ClusterState, store: Store) -> None:
    await runner(state, store)


async def _shutdown(
    server: _Uvicorn,
    web: asyncio.Task[None],
    controllers: asyncio.Task[None] | None,
    close_streams: Callable[[], None],
) -> None:
    """Stop the controllers (giving up leadership), end streams, drain HTTP connections."""
    if controllers is not None and not controllers.done():
        controllers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await controllers
    close_streams()
    server.should_exit = True
    while not web.done():
        _abort_closing_idle(server)
        await asyncio.wait({web}, timeout=STARTUP_POLL * 5)
    with contextlib.suppress(asyncio.CancelledError):
        await web


def _abort_closing_idle(server: _Uvicorn) -> None:
    """Drop idle connections uvicorn already closed politely.

    Over TLS a polite close waits for the peer's close_notify, which an idle
    keep-alive client (an agent's pooled connection) never sends: shutdown would
    stall for the whole grace period. Only connections with no response in flight
    and nothing left to write are dropped.
    """
    for conn in list(server.server_state.connections):
        cycle = getattr(conn, "cycle", None)
        transport = getattr(conn, "transport", None)
        if transport is None or not transport.is_closing():
            continue
        if cycle is not None and not getattr(cycle, "response_complete", False):
            continue
        if transport.get_write_buffer_size() == 0:
            transport.abort()
