"""Starts the MONAI Label server for this app, listening on 127.0.0.1 unless ``--host`` says otherwise.

``monailabel start_server`` listens on all interfaces (0.0.0.0) by default; this launcher keeps the server
local to the workstation unless asked::

    python apps/rep3d/start_server.py --studies /data/ct --conf models amos_ct,kits
    python apps/rep3d/start_server.py --studies /data/ct --host 0.0.0.0   # shared use: see docs/monailabel.md

Every other ``monailabel start_server`` option (``--port``, ``--conf``, ...) is passed through.
"""

import os
import sys
from typing import List, Sequence

LOCAL_HOST = "127.0.0.1"


def has_option(args: Sequence[str], *names: str) -> bool:
    """Whether ``args`` set one of the options ``names`` (as ``--name value`` or ``--name=value``)."""
    return any(arg == name or arg.startswith(f"{name}=") for arg in args for name in names)


def start_server_args(args: Sequence[str], app_dir: str) -> List[str]:
    """``monailabel`` arguments: ``start_server`` for ``app_dir`` on 127.0.0.1, unless ``args`` set app or host."""
    defaults = [] if has_option(args, "--app", "-a") else ["--app", app_dir]
    defaults += [] if has_option(args, "--host", "-i") else ["--host", LOCAL_HOST]
    return ["start_server", *defaults, *args]


def main() -> None:
    from monailabel.main import Main

    sys.argv = [sys.argv[0], *start_server_args(sys.argv[1:], os.path.dirname(os.path.abspath(__file__)))]
    Main().run()


if __name__ == "__main__":
    main()
