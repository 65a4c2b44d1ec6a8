"""Entry point: ``python -m rep3d_networks.data <prepare|download|phantom|totalseg> --help``."""

import fire

from .cli import commands


def main() -> None:
    """Run the ``fire`` CLI."""
    fire.Fire(commands())


if __name__ == "__main__":
    main()
