"""Entry point: ``python -m rep3d_networks.analysis <command> --output_dir DIR ...``."""

import fire

from rep3d_networks.analysis.cli import commands

if __name__ == "__main__":
    fire.Fire(
        commands(), name="python -m rep3d_networks.analysis", serialize=lambda result: None
    )  # commands print their paths
