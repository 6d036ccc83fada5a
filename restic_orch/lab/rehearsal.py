"""The disaster rehearsal: the host-lost scenario of the runbook, run as written on a blank "new host".

The runbook's shell blocks carry a marker (`<!-- rehearsal: run -->` or `<!-- rehearsal: manual: <reason> -->`).
`runbook_blocks` reads them; `make_disaster` takes the lab to the state a lost host leaves (fake PVE freshly
installed, databases dropped, state bucket emptied, vault files, configuration, secrets, local repository gone);
`escrow_items` puts in the new host's /root only what the escrow sheet gives; `run_blocks` runs the marked blocks
in order, in one bash, inside a private mount namespace where /root and /opt are empty and PATH is a fresh
host's. There is no second copy of the steps: a runbook command that fails fails the rehearsal.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from restic_orch import escrow
from restic_orch.config import Config
from restic_orch.lab.pve import access, containers, layout, qemu
from restic_orch.runner import run as run_command

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "disaster-recovery.md"
SECTION = "## 1. "
MARKER = re.compile(r"^\s*<!--\s*rehearsal:\s*(run|manual)(?::\s*(.*?))?\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# the directories a blank host has empty; the lab's own services live elsewhere (under the lab directory)
HIDDEN = ("/root", "/opt")
# what an installed restic-orch leaves elsewhere: hidden too when present (a rehearsal on a real host must not
# find its configuration, secrets, state or local repository); absent ones are absent on the new host anyway
HIDDEN_IF_PRESENT = ("/etc/restic-orch", "/etc/cron.d/restic-orch", "/var/lib/restic-orch", "/var/log/restic-orch",
                     "/var/backups/infra-oldevops")
# the escrow sheet lists the token, but a new host gets a new one (runbook 1, step 2)
CREATED_ON_THE_NEW_HOST = ("sources.proxmox.token_file",)
# keys the host does not hold by design, kept by hand beside the sheet: where the lab keeps the operator's copy
KEPT_BY_HAND = {"sources.terraform_state.restore_env_file": ("s3", "tfstate_writer_env_file")}


class RehearsalError(Exception):
    pass


@dataclass
class Block:
    line: int          # where the fence opens in the runbook (1-based)
    step: str          # the numbered step (or bold paragraph) the block belongs to
    mode: str          # "run" or "manual"
    reason: str
    text: str


def runbook_blocks(path: Path = RUNBOOK, section: str = SECTION) -> list[Block]:
    """Every fenced shell block of the section, each with its marker; an unmarked block is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(section)), None)
    if start is None:
        raise RehearsalError(f"{path.name}: no section starting with {section!r}")
    blocks, step, marker, i = [], "", None, start + 1
    while i < len(lines) and not lines[i].startswith("## "):
        line = lines[i]
        heading = re.match(r"^(\d+)\.\s|^\*\*(.+?)\*\*", line)
        if heading:
            step = f"step {heading.group(1)}" if heading.group(1) else heading.group(2).rstrip(".")
        if (found := MARKER.match(line)) is not None:
            marker = found
        elif (fence := FENCE.match(line)) is not None and fence.group(2) in ("sh", "bash"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            indent = len(fence.group(1))
            body = "\n".join(raw[indent:] if raw[:indent].isspace() else raw.lstrip() for raw in lines[i + 1:end])
            if marker is None:
                raise RehearsalError(f"{path.name}:{i + 1}: shell block without a rehearsal marker ({step})")
            blocks.append(Block(i + 1, step, marker.group(1), marker.group(2) or "", body))
            marker, i = None, end
        elif line.strip():
            marker = None
        i += 1
    return blocks


# ---------------------------------------------------------------- the disaster
def reset_pve(pve_root: Path) -> dict[str, list[int]]:
    """The fake PVE as a fresh install: no guest, root@pam only, no token, role or ACL. Returns the VMIDs lost,
    containers and VMs."""
    node = layout.load_node(pve_root)
    lost = {"containers": layout.list_vmids(pve_root), "vms": layout.list_qemu_vmids(pve_root)}
    for vmid in lost["containers"]:
        containers.destroy(pve_root, vmid)
    for vmid in lost["vms"]:
        qemu.destroy(pve_root, vmid, node["node"], unreferenced=True)
    node["access"], node["tokens"] = access.initial_access(), {}
    layout.save_node(pve_root, node)
    return lost


def make_disaster(lab_dir: Path, state: dict[str, Any], config: Config) -> dict[str, Any]:
    """Everything the lost host held, gone; the offsite bucket (and its bootstrap bundle) survives."""
    from restic_orch.lab.mariadb import mariadb_sql
    from restic_orch.lab.postgres import psql
    from restic_orch.lab.s3 import empty_bucket

    services = state["services"]
    lost: dict[str, Any] = reset_pve(Path(services["pve"]["root"]))
    pg = [d for d in _lines(psql(services["postgres"], "SELECT datname FROM pg_database WHERE NOT datistemplate"
                                                       " AND datname <> 'postgres';"))]
    for name in pg:
        psql(services["postgres"], f'DROP DATABASE "{name}" WITH (FORCE);')
    system = {"information_schema", "mysql", "performance_schema", "sys"}
    my = [d for d in _lines(mariadb_sql(services["mariadb"], "SHOW DATABASES;")) if d not in system]
    for name in my:
        mariadb_sql(services["mariadb"], f"DROP DATABASE `{name}`;")
    lost["databases"] = sorted(pg + my)
    s3 = services["s3"]
    lost["state_objects"] = empty_bucket(s3, s3["buckets"]["tfstate"])
    vault = state["vault"]
    for path in vault["encrypted"] + vault["plaintext"]:
        Path(path).unlink(missing_ok=True)
    lost["vault_files"] = len(vault["encrypted"] + vault["plaintext"])
    host_dirs = [Path(config.repositories.local.url) if "local" in dict(config.repositories.items()) else None,
                 config.staging_dir, config.state_dir, lab_dir / "etc", lab_dir / "log"]
    for path in [p for p in host_dirs if p is not None] + [_review_dir(config)]:
        shutil.rmtree(path, ignore_errors=True)
    Path(state["config"]).unlink(missing_ok=True)
    return lost


def _review_dir(config: Config) -> Path:
    from restic_orch.hooks.host_files import review_dir_of

    return review_dir_of(config)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- the escrow items
def escrow_items(config: Config, escrow_env: Path, new_root: Path, state: dict[str, Any]) -> list[str]:
    """What the operator copies from the sheet into /root (runbook 1, step 4), with umask 077 as it says."""
    new_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = [_copy_private(escrow_env.read_text(encoding="utf-8"), new_root / "escrow.env")]
    for entry in escrow.collect_secrets(config, with_values=True):
        if not entry.new_host or entry.location in CREATED_ON_THE_NEW_HOST:
            continue
        if entry.value is None:
            raise RehearsalError(f"escrow item {entry.location} ({entry.what}) has no value on the old host")
        written.append(_copy_private(entry.value + "\n", new_root / Path(entry.new_host).name))
    for entry in escrow.optional_secrets(config):
        service, key = KEPT_BY_HAND.get(entry.location, ("", ""))
        if not key:
            raise RehearsalError(f"escrow item {entry.location} ({entry.what}): the lab keeps no copy of it")
        held = Path(state["services"][service][key]).read_text(encoding="utf-8")
        written.append(_copy_private(held, new_root / Path(entry.new_host).name))
    return written


def fresh_new_host(work: Path, items: Path) -> Path:
    """An empty new host whose /root holds the escrow items (copied, 0600), nothing else."""
    new_host = work / "new-host"
    shutil.rmtree(new_host, ignore_errors=True)
    root = new_host / "root"
    root.mkdir(parents=True, mode=0o700)
    for item in sorted(items.iterdir()):
        _copy_private(item.read_text(encoding="utf-8"), root / item.name)
    return new_host


def _copy_private(text: str, path: Path) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path.name


# ---------------------------------------------------------------- running the blocks
@dataclass
class StepResult:
    line: int
    step: str
    mode: str
    reason: str = ""
    seconds: float | None = None
    result: str = ""   # ok / failed / not reached / manual


@dataclass
class Played:
    exit_code: int
    steps: list[StepResult] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    output: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "steps": [asdict(s) for s in self.steps],
                "seconds": round(self.finished - self.started, 3)}


def shims(bin_dir: Path, pve_root: Path) -> None:
    """`pveum` on the new host's PATH: the fake's CLI as root@pam, as on a real node."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "pveum"
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m restic_orch.lab.pve.pveum"
                      f" --root {shlex.quote(str(pve_root))} \"$@\"\n", encoding="utf-8")
    script.chmod(0o755)


def _script(blocks: list[Block], times: Path) -> str:
    mark = f"printf '%s %s\\n' \"$1\" \"$(date +%s.%N)\" >> {shlex.quote(str(times))}"
    lines = ["set -euo pipefail", f"__step() {{ {mark}; }}"]
    for index, block in enumerate(blocks):
        if block.mode == "run":
            lines += [f"__step {index}", block.text]
    lines.append("__step end")
    return "\n".join(lines) + "\n"


def _namespace_setup(new_host: Path) -> str:
    """Bind empty directories over /root, /opt and an installed restic-orch's places; keep the interpreter the
    pveum shim runs on visible."""
    commands = []
    keep = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()]
    for present in (Path(p) for p in HIDDEN_IF_PRESENT if Path(p).exists()):
        empty = new_host / "hidden" / present.relative_to("/")
        if present.is_dir():
            empty.mkdir(parents=True, exist_ok=True)
        else:
            empty.parent.mkdir(parents=True, exist_ok=True)
            empty.write_text("")
        commands.append(f"mount --bind {shlex.quote(str(empty))} {shlex.quote(str(present))}")
    for hidden in HIDDEN:
        target = new_host / hidden.strip("/")
        target.mkdir(parents=True, exist_ok=True)
        for path in keep:
            if path.is_relative_to(hidden):
                top = Path(hidden) / path.relative_to(hidden).parts[0]
                inside = target / top.relative_to(hidden)
                inside.mkdir(parents=True, exist_ok=True)
                commands.append(f"mount --bind {shlex.quote(str(top))} {shlex.quote(str(inside))}")
        commands.append(f"mount --rbind {shlex.quote(str(target))} {shlex.quote(hidden)}")
    return " && ".join(commands)


def run_blocks(blocks: list[Block], new_host: Path, pve_root: Path, timeout: float = 1800) -> Played:
    """The `run` blocks in order in one bash, on the new host; each block timed."""
    bin_dir, times = new_host / "bin", new_host / "times"
    shims(bin_dir, pve_root)
    times.unlink(missing_ok=True)
    script = new_host / "rehearsal.sh"
    script.write_text(_script(blocks, times), encoding="utf-8")
    # a fresh host's environment: nothing of the test's (no RESTIC_*, AWS_*, PIP_*, virtualenv) gets in
    fresh = ["env", "-i", "HOME=/root", f"PATH={bin_dir}:{FRESH_PATH}", "LANG=C.UTF-8", "TERM=dumb"]
    inner = (f"{_namespace_setup(new_host)} && cd /root && exec {shlex.join(fresh)}"
             f" bash --noprofile --norc {shlex.quote(str(script))}")
    argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c", inner]
    started = time.time()
    result = run_command(argv, timeout=timeout, check=False)
    played = Played(result.returncode, started=started, finished=time.time(),
                     output=(result.stdout or "") + (result.stderr or ""))
    played.steps = _timed(blocks, times, played)
    return played


def _timed(blocks: list[Block], times: Path, played: Played) -> list[StepResult]:
    marks = [line.split() for line in times.read_text().splitlines()] if times.exists() else []
    stamps = {name: float(at) for name, at in marks}
    order = [name for name, _ in marks]
    results = []
    for index, block in enumerate(blocks):
        step = StepResult(block.line, block.step, block.mode, block.reason)
        if block.mode == "manual":
            step.result = "manual"
        elif str(index) not in stamps:
            step.result = "not reached"
        else:
            following = order[order.index(str(index)) + 1] if order[-1] != str(index) else None
            end = stamps[following] if following else played.finished
            step.seconds = round(end - stamps[str(index)], 3)
            step.result = "ok" if following else ("ok" if played.exit_code == 0 else "failed")
        results.append(step)
    if stamps:
        played.started = min(stamps.values())
    return results


# ---------------------------------------------------------------- the whole rehearsal
@dataclass
class Rehearsal:
    """What one rehearsal did and found, as the dated report shows it."""

    date: str
    passed: bool
    end_to_end_seconds: float | None
    played: Played
    lost: dict[str, Any]
    escrow_items: list[str]
    components: list[dict[str, Any]]
    problems: list[str]
    restic_orch: str
    restic: str

    def to_json(self) -> dict[str, Any]:
        return {"date": self.date, "passed": self.passed, "end_to_end_seconds": self.end_to_end_seconds,
                "steps": self.played.to_json()["steps"], "exit_code": self.played.exit_code, "lost": self.lost,
                "escrow_items": self.escrow_items, "components": self.components, "problems": self.problems,
                "restic_orch": self.restic_orch, "restic": self.restic}


def cli(config_path: Path, *args: str, timeout: float = 1800) -> str:
    """restic-orch on the old host, before the disaster (a failure stops the rehearsal before it starts)."""
    argv = [str(Path(sys.executable).with_name("restic-orch")), "--config", str(config_path), *args]
    result = run_command(argv, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RehearsalError(f"restic-orch {' '.join(args)} exited {result.returncode} on the old host:\n"
                             f"{result.stdout}{result.stderr}")
    return result.stdout


def old_host_night(config_path: Path, escrow_dir: Path) -> None:
    """The old host's last good night: the bundle built, the backup (which publishes it), the escrow sheet."""
    cli(config_path, "bundle", "build")
    cli(config_path, "backup")
    cli(config_path, "escrow", "--out", str(escrow_dir), "--with-secrets")


def verify(config: Config, expected: list[str], played: Played) -> tuple[list[dict[str, Any]], list[str]]:
    """The restore's own record (last-restore.json) against the night's manifest: every component back, ok."""
    problems = [] if played.exit_code == 0 else [f"the runbook stopped: exit {played.exit_code}"]
    record = config.state_dir / "last-restore.json"
    try:
        steps = json.loads(record.read_text(encoding="utf-8"))["extra"]["steps"]
    except (OSError, ValueError, KeyError) as exc:
        return [], [*problems, f"no restore record: {type(exc).__name__}: {exc}"]
    rows = [{k: s.get(k) for k in ("component", "result", "seconds", "checks", "message")} for s in steps]
    done = {s["component"] for s in steps if s.get("result") == "ok"}
    problems += [f"{c}: not restored" for c in expected if c not in done]
    problems += [f"{s['component']}: sha256 differs from the manifest" for s in steps
                 if (s.get("checks") or {}).get("sha256") is False]
    return rows, problems


@dataclass
class Disaster:
    """The state the rehearsal starts from: what the night stored, what the operator holds, what was lost."""

    expected: list[str]   # every component of the night's snapshot
    items: list[str]      # the escrow items (files under work/items)
    lost: dict[str, Any]
    pve_root: Path


def prepare(lab_dir: Path, state: dict[str, Any], config: Config, work: Path) -> Disaster:
    """The old host's night, the escrow items taken from its sheet, then the disaster (the lab must be up)."""
    from restic_orch.browse import locate
    from restic_orch.repos import open_repo

    escrow_dir = work / "escrow"
    old_host_night(Path(state["config"]), escrow_dir)
    name = escrow.restore_from(config)
    repo = open_repo(name, dict(config.repositories.items())[name], config)
    expected = sorted(a.component for a in locate(repo, "latest").artifacts)
    items = escrow_items(config, escrow_dir / "escrow.env", work / "items", state)
    lost = make_disaster(lab_dir, state, config)
    return Disaster(expected, items, lost, Path(state["services"]["pve"]["root"]))


def play(config: Config, disaster: Disaster, new_host: Path, blocks: list[Block] | None = None) -> Rehearsal:
    """The runbook's blocks on the new host, then the check against the night's manifest."""
    from restic_orch import __version__, restic

    played = run_blocks(blocks if blocks is not None else runbook_blocks(), new_host, disaster.pve_root)
    components, problems = verify(config, disaster.expected, played)
    return Rehearsal(time.strftime("%Y-%m-%dT%H%M%S", time.gmtime(played.started or time.time())),
                     not problems, round(played.finished - played.started, 1) if not problems else None,
                     played, disaster.lost, disaster.items, components, problems, __version__, str(restic.version()))


def rehearse(lab_dir: Path, state: dict[str, Any], config: Config, work: Path) -> Rehearsal:
    disaster = prepare(lab_dir, state, config, work)
    return play(config, disaster, fresh_new_host(work, work / "items"))


# ---------------------------------------------------------------- the dated report
def _masked(text: str, masks: dict[str, str]) -> str:
    for path, label in sorted(masks.items(), key=lambda item: -len(item[0])):
        text = text.replace(path, label)
    return text


def render(result: Rehearsal) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    took = "not reached" if result.end_to_end_seconds is None else f"{result.end_to_end_seconds:.1f} s"
    lines = [f"# Disaster rehearsal {result.date}: {verdict}", "",
             "The host-lost scenario of docs/runbooks/disaster-recovery.md, run as written on a blank new host",
             f"(`make rehearsal`; restic-orch {result.restic_orch}, restic {result.restic}).", "",
             f"- End to end (first command to last verified component): "
             f"{took}",
             f"- Lost before the first command: {len(result.lost.get('containers', []))} containers, "
             f"{len(result.lost.get('vms', []))} VMs, "
             f"{len(result.lost.get('databases', []))} databases, {result.lost.get('state_objects', 0)} state objects,"
             f" {result.lost.get('vault_files', 0)} vault files, the configuration, secrets and local repository",
             f"- Escrow items at hand: {', '.join(result.escrow_items)}", "",
             "## Runbook steps", "", "| line | step | ran | seconds | why not run |", "|---|---|---|---|---|"]
    for step in result.played.steps:
        seconds = f"{step.seconds:.1f}" if step.seconds is not None else ""
        lines.append(f"| {step.line} | {step.step} | {step.result} | {seconds} | {step.reason} |")
    lines += ["", "## Components (the restore's own checks against the manifest)", "",
              "| component | result | seconds | checks |", "|---|---|---|---|"]
    for row in result.components:
        checks = ", ".join(f"{k}={v}" for k, v in (row.get("checks") or {}).items())
        lines.append(f"| {row['component']} | {row['result']} | {row.get('seconds') or ''} | {checks} |")
    lines += ["", "## Problems", ""] + ([f"- {p}" for p in result.problems] or ["none"])
    return "\n".join(lines) + "\n"


def write_report(result: Rehearsal, out_dir: Path, masks: dict[str, str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"rehearsal-{result.date}"
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    md.write_text(_masked(render(result), masks), encoding="utf-8")
    js.write_text(_masked(json.dumps(result.to_json(), indent=2, ensure_ascii=False), masks) + "\n", encoding="utf-8")
    return [md, js]


def main(argv: list[str] | None = None) -> int:
    """`make rehearsal`: a lab of its own, the rehearsal, the report, the lab down."""
    import argparse

    from restic_orch.config import load_config
    from restic_orch.lab import manager

    parser = argparse.ArgumentParser(prog="python -m restic_orch.lab.rehearsal", description=main.__doc__)
    parser.add_argument("--report-dir", type=Path, default=Path("docs/restore-tests"))
    args = parser.parse_args(argv)
    lab_dir = Path(tempfile.mkdtemp(prefix="restic-orch-rehearsal-", dir="/tmp"))
    lab_dir.chmod(0o755)  # noqa: S103 - postgres and mariadb run as their own users under it
    try:
        state = manager.up(lab_dir)
        result = rehearse(lab_dir, state, load_config(Path(state["config"])), lab_dir / "rehearsal")
        files = write_report(result, args.report_dir, {str(lab_dir): "<lab>"})
        print(_masked(result.played.output, {str(lab_dir): "<lab>"})[-4000:])
        print(render(result))
        print("report: " + ", ".join(str(f) for f in files))
        return 0 if result.passed else 1
    finally:
        manager.down(lab_dir)
        shutil.rmtree(lab_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
