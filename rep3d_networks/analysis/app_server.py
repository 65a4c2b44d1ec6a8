"""Starts and stops the MONAI Label app ``apps/rep3d`` for a measurement: ``start_server.py`` on 127.0.0.1, a free
port, a scratch copy of the app, the log in a file, one CPU thread per request (``OMP_NUM_THREADS=1``, as
``benchmarks/click_study.sh``: on shared cores two threads stall, see ``rep3d_networks.ops``).

``seed`` seeds the server process's ``random`` before the server starts, so that MONAI Label's ``random`` strategy
(``random.choices`` over the unlabelled images) draws the same sequence for the same datastore and seed.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional

import requests

APP = Path(__file__).resolve().parents[2] / "apps" / "rep3d"
SEEDED_START = (
    "import random, runpy, sys; random.seed(int(sys.argv[1])); sys.argv = sys.argv[2:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
"""``python -c`` program: seeds ``random`` with argv[1], then runs the script argv[2] with the arguments after it."""
STOP_S = 20


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_app(target: Path) -> Path:
    """A scratch copy of ``apps/rep3d`` (``start_server`` creates ``model/``, ``logs/`` and ``bin/`` in the app)."""
    ignore = shutil.ignore_patterns("model", "logs", "bin", "__pycache__")
    return Path(shutil.copytree(APP, target, ignore=ignore))


def server_command(app: Path, studies: Path, conf: Dict[str, str], port: int, seed: Optional[int]) -> list:
    """``python <app>/start_server.py --studies ... --conf key value ... --port N`` (seeded: see the module
    docstring)."""
    launcher = ["-c", SEEDED_START, str(int(seed))] if seed is not None else []
    command = [sys.executable, *launcher, str(app / "start_server.py"), "--studies", str(studies)]
    for key, value in conf.items():
        command += ["--conf", key, str(value)]
    return command + ["--port", str(port)]


class AppServer:
    """The app's server in a subprocess (own process group) on a scratch copy of the app under ``workdir``.

    Args:
        studies: the datastore folder (``--studies``).
        conf: ``--conf`` pairs, e.g. ``{"models": "amos_ct", "bundles_dir": ..., "device": "cpu"}``.
        workdir: folder for the app copy, ``server.log`` and MONAI Label's sessions.
        seed: seeds the server's ``random`` (module docstring); ``None``: unseeded.
        env: extra environment variables of the server.
    """

    def __init__(
        self, studies: Path, conf: Dict[str, str], workdir: Path, seed: Optional[int] = None, env: Optional[dict] = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        command = server_command(copy_app(workdir / "app"), studies, conf, self.port, seed)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MONAI_LABEL_SESSION_PATH": str(workdir / "sessions"),
            **(env or {}),
        }
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_until_up(self, timeout_s: float) -> None:
        """Returns once ``/info/`` answers.

        Raises:
            RuntimeError: the server exited (the message holds the end of its log).
            TimeoutError: no answer within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise TimeoutError(f"server not up after {timeout_s} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the server's process group (its training subprocesses too), SIGKILL after :data:`STOP_S`."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextmanager
def running_server(
    studies: Path,
    conf: Dict[str, str],
    workdir: Path,
    start_timeout_s: float,
    seed: Optional[int] = None,
    env: Optional[dict] = None,
) -> Iterator[AppServer]:
    """An :class:`AppServer` that answers ``/info/``; stopped on exit."""
    server = AppServer(studies, conf, workdir, seed, env)
    try:
        server.wait_until_up(start_timeout_s)
        yield server
    finally:
        server.stop()
