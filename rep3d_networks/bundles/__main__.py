"""``python -m rep3d_networks.bundles render [--bundles_dir bundles] [--check]``."""

import argparse
import sys
from typing import Optional, Sequence

from rep3d_networks.bundles.render import render


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Renders the bundles; with ``--check`` exits 1 and lists the files that differ from their rendering."""
    parser = argparse.ArgumentParser(prog="python -m rep3d_networks.bundles", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "render", help="write every bundle's configs, metadata.json and model-card class table"
    )
    command.add_argument("--bundles_dir", default="bundles", help="the bundles folder (default: bundles)")
    command.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    args = parser.parse_args(argv)
    try:
        changed = render(args.bundles_dir, check=args.check)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    verb = "differs from its rendering" if args.check else "rendered"
    for name in changed:
        print(f"{name}: {verb}")
    if not changed:
        print("all bundle files match their rendering")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
