"""Helpers for the fake Proxmox VE node (restic_orch.lab.pve) shared by the integration tests.

`running_node(root, ...)` starts a server (subprocess, HTTPS on a free port) over a fresh node and stops
it afterwards; talk to it with the real proxmoxer through FakePve.api().
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxmoxer import ProxmoxAPI

from restic_orch.lab.pve import TOKEN_NAME, TOKEN_USER, create_node, token_secret, write_faults
from restic_orch.lab.pve.node import add_root_token
from restic_orch.lab.pve.pveum import run as pveum


@dataclass
class FakePve:
    root: Path
    host: str
    port: int
    proc: subprocess.Popen[str]
    node: str = "pve1"

    def api(self, token_value: str | None = None, token_name: str = TOKEN_NAME) -> ProxmoxAPI:
        return ProxmoxAPI(self.host, port=self.port, user=TOKEN_USER, token_name=token_name,
                          token_value=token_value if token_value is not None else token_secret(self.root),
                          verify_ssl=False, backend="https", timeout=30)

    def root_api(self) -> ProxmoxAPI:
        """The admin's view: a root@pam token without privilege separation (full rights, not root@pam)."""
        name = "lab"
        tokens = __import__("json").loads((self.root / "node.json").read_text()).get("tokens", {})
        secret = tokens.get(f"root@pam!{name}", {}).get("secret") or add_root_token(self.root, name)[1]
        return ProxmoxAPI(self.host, port=self.port, user="root@pam", token_name=name, token_value=secret,
                          verify_ssl=False, backend="https", timeout=30)

    def pveum(self, *argv: str) -> Any:
        """`pveum ...` on the node, as root@pam (like the real CLI on the host)."""
        return pveum(self.root, list(argv))

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/api2/json"

    def faults(self, **faults: Any) -> None:
        """Replace the fault switches (the server re-reads them on every use)."""
        write_faults(self.root, **faults)

    def wait_task(self, upid: str, timeout: float = 60) -> dict[str, Any]:
        api = self.root_api()  # any task, whoever started it (Sys.Audit on the node)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status = api.nodes(self.node).tasks(upid).status.get()
            if status["status"] == "stopped":
                return status
            time.sleep(0.05)
        raise TimeoutError(f"task {upid} still running after {timeout}s")

    def task_log(self, upid: str) -> list[str]:
        return [line["t"] for line in self.root_api().nodes(self.node).tasks(upid).log.get(limit=0)]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_fake_pve(root: Path, host: str = "127.0.0.1", timeout: float = 20) -> FakePve:
    """Start `python -m restic_orch.lab.pve serve` for an existing node and wait until it listens."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "restic_orch.lab.pve", "serve", "--root", str(root),
                             "--host", host, "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline and not line:
        line = proc.stdout.readline().strip()
        if proc.poll() is not None:
            break
    if not line.startswith("listening https://"):
        proc.kill()
        raise RuntimeError(f"fake PVE did not start (got {line!r})")
    port = int(line.rsplit(":", 1)[1])
    return FakePve(root, host, port, proc)


@contextmanager
def running_node(root: Path, **node_kwargs: Any) -> Iterator[FakePve]:
    """A fresh node under root, served for the duration of the block (module-scoped fixtures use it)."""
    node_kwargs.setdefault("size_bytes", 256 * 1024)
    create_node(root, **node_kwargs)
    server = start_fake_pve(root)
    try:
        yield server
    finally:
        server.stop()
