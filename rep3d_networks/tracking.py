"""Experiment tracking defaults for the bundles (``python -m monai.bundle run ... --tracking mlflow``)."""

import os


def sqlite_store(folder: str) -> str:
    """``sqlite:///<folder>/mlflow.db`` as an absolute URI, creating ``folder``.

    MONAI's default tracking store is ``file://<output_dir>/mlruns``, which MLflow 3 refuses unless
    ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite needs no server and is what MLflow recommends instead. Written here
    because ``monai.utils.path_to_uri`` only makes ``file://`` URIs and SQLite does not create missing folders.
    """
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    return "sqlite:///" + os.path.join(folder, "mlflow.db")
