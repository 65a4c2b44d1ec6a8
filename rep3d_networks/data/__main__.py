"""Entry point: ``python -m rep3d_networks.data <prepare|download|phantom|totalseg> --help``."""

import sys

import fire

from .cli import commands


def main() -> None:
    """Run the ``fire`` CLI; input problems end with a one-line ``error: ...`` and exit status 1."""
    try:
        fire.Fire(commands(), name="python -m rep3d_networks.data")
    except (ValueError, FileNotFoundError, FileExistsError, NotImplementedError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
