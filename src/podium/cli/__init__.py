"""The `podium` command line (typer). Nothing imports this package.

::

    podium ── demo | server | agent            processes
           ── apply | get | delete | events    objects, through the REST API (podium.client)
           ── host token|cordon|uncordon       hosts
"""

from podium.cli._app import app, main

__all__ = ["app", "main"]
