"""Run the real CLI in a child process, as cron or a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "restic_orch.cli"]


def restic_orch(config: Path | str | None, *args: str, check: bool = False, timeout: float = 600,
                env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process, as cron or a user would."""
    argv = CLI + (["--config", str(config)] if config else []) + list(args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}")
    return result


def run_json(config: Path, *args: str, expect: int | tuple[int, ...] = 0, timeout: float = 600) -> dict:
    result = restic_orch(config, "--json", *args, timeout=timeout)
    codes = (expect,) if isinstance(expect, int) else expect
    assert result.returncode in codes, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)
