"""A real Ray cluster on loopback: a head node and worker nodes started by ``ray start``,
each with its own temporary folder (nothing shared between nodes but what a job puts on
its storage), stopped by their process ids (never ``ray stop``, which would stop every Ray
instance on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for nodes and jobs: no inherited RAY_ADDRESS, no token between loopback nodes."""
    out = {k: v for k, v in (env or os.environ).items() if k != "RAY_ADDRESS"}
    out.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})
    return out


class LoopbackCluster:
    """``start()`` the head, ``add_node()`` more; ``address`` goes into a job's RAY_ADDRESS."""

    def __init__(self, env: dict[str, str], cpus_per_node: int = 1):
        self.env = cluster_env(env)
        self.cpus = cpus_per_node
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self.temp_dirs: list[str] = []  # short paths: Ray's socket names must stay under 108 bytes

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        temp = tempfile.mkdtemp(prefix=f"ray-{name}-")
        self.temp_dirs.append(temp)
        proc = subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                                 f"--temp-dir={temp}", f"--resources={{\"{name}\": 1}}", *args],
                                env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.nodes.append(proc)
        return proc

    def start(self) -> "LoopbackCluster":
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false"], "head")
        self._wait_for("head")
        return self

    def add_node(self) -> subprocess.Popen:
        name = f"node{len(self.nodes)}"
        proc = self._start([f"--address={self.address}"], name)
        self._wait_for(name)  # by its own resource: a killed node may still count as alive for a while
        return proc

    def alive_nodes(self) -> list[str]:
        """The names (unique resources) of the nodes the head counts as alive."""
        code = ("import ray; ray.init(address='auto', logging_level='ERROR'); "
                "print('ALIVE', *sorted(r for n in ray.nodes() if n['Alive'] for r in n['Resources'] "
                "if r == 'head' or r.startswith('node') and r[4:].isdigit()))")
        done = subprocess.run([sys.executable, "-c", code], env={**self.env, "RAY_ADDRESS": self.address},
                              capture_output=True, text=True, timeout=60)
        # Ray may print its own warnings (a lagging heartbeat on a busy machine) around ours
        lines = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("ALIVE")]
        return lines[-1] if done.returncode == 0 and lines else []

    def alive(self) -> int:
        """How many nodes the head counts as alive."""
        return len(self.alive_nodes())

    def _wait_for(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name in self.alive_nodes():
                return
            time.sleep(0.5)
        raise RuntimeError(f"the loopback Ray cluster's node {name!r} did not come up in {timeout:.0f} s")

    def kill_raylet(self, node: subprocess.Popen) -> int:
        """SIGKILL a node's raylet (its workers die with it); returns the raylet's pid."""
        for child in psutil.Process(node.pid).children(recursive=True):
            if child.name() == "raylet":
                child.kill()
                return child.pid
        raise RuntimeError("the node has no raylet")

    def stop(self) -> None:
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for proc in self.nodes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for temp in self.temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)
        self.nodes.clear()

    def __enter__(self) -> "LoopbackCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
