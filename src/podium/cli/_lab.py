"""podium lab up|down: a multi-host cluster of network namespaces on this machine."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from podium.cli._common import console, err_console, fail

lab_app = typer.Typer(
    help="A real multi-host cluster on this machine: each host a network namespace (root).",
    no_args_is_help=True,
)

NameOption = Annotated[
    str, typer.Option("--name", help="Lab name (namespaces are pdm-NAME-*); several can coexist")
]


@lab_app.command("up")
def up(
    hosts: Annotated[int, typer.Option(min=1, help="Hosts to make: h1..hN")] = 3,
    sites: Annotated[
        int,
        typer.Option(
            min=1,
            help="Sites s1..sN, hosts in equal blocks (label site=sK); each site has its own "
            "storage and ships DR replicas to the next site's",
        ),
    ] = 1,
    driver: Annotated[str, typer.Option(help="qemu (real guests) or sim")] = "sim",
    store: Annotated[
        str | None,
        typer.Option(
            help="Store URL (default: sqlite:///LABDIR/server/podium.db), or etcd3: a "
            "3-member etcd cluster on loopback that the lab starts and stops"
        ),
    ] = None,
    name: NameOption = "lab",
    subnet: Annotated[
        str, typer.Option(help="Private IPv4 network, used only inside the lab's namespaces")
    ] = "10.213.0.0/16",
    host_ttl: Annotated[int, typer.Option(min=1, help="Host lease TTL, seconds")] = 8,
    servers: Annotated[
        int,
        typer.Option(
            min=1,
            max=5,
            help="podium servers to run (one leads the controllers, all serve; agents and "
            "the CLI fail over between them); more than one needs --store etcd3",
        ),
    ] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every host")] = 60.0,
    json_output: Annotated[
        bool, typer.Option("--json", help='Print only {"config":..,"server":..,"hosts":[..]}')
    ] = False,
) -> None:
    """Make the fabric and N hosts, start the server and the agents, and leave them running."""
    from podium.lab import LabError, lab_up  # noqa: PLC0415

    def say(line: str) -> None:
        if not json_output:
            err_console.print(line, style="dim", highlight=False, markup=False)

    try:
        info = lab_up(
            hosts=hosts, driver=driver, store=store, name=name, subnet=subnet, sites=sites,
            host_ttl=host_ttl, servers=servers, timeout=timeout, say=say,
        )  # fmt: skip
    except LabError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted: what lab up had made is removed again", 130)
    if json_output:
        print(json.dumps(info.to_json()))
        return
    console.print(f"lab {info.name} is up: hosts {', '.join(info.hosts)}", highlight=False)
    for url in info.servers or (info.server,):
        console.print(f"server  {url}", highlight=False)
    console.print(f"config  {info.config}", highlight=False)
    console.print(
        f"try:    PODIUM_CONFIG={info.config} podium get hosts\n"
        f"stop:   podium lab down{'' if name == 'lab' else f' --name {name}'}",
        highlight=False,
    )


@lab_app.command("down")
def down(name: NameOption = "lab") -> None:
    """Stop the lab's processes (by PID) and remove its namespaces, bridges, veths and taps."""
    from podium.lab import LabError, lab_down  # noqa: PLC0415

    try:
        report = lab_down(name, say=lambda line: err_console.print(line, style="dim", markup=False))
    except LabError as err:
        fail(str(err))
    if not report.found:
        console.print(f"lab {name} is not up: nothing to do", highlight=False)
        return
    console.print(
        f"lab {name} is down: stopped {len(report.stopped)} processes, "
        f"removed {len(report.namespaces)} namespaces",
        highlight=False,
    )
