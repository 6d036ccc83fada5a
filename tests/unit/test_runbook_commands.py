"""Every restic-orch command written in the docs must parse with the real command line.

Commands are taken from fenced sh/bash blocks of the runbook, the getting-started guide and the README, and
from the EXAMPLES in the header of scripts/restore.sh; each is run through click's parser only (make_context,
recursively through the groups), never executed. Renaming an option or a choice breaks this test.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from restic_orch.cli import main

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbooks" / "disaster-recovery.md"
MARKDOWN_SOURCES = [RUNBOOK, ROOT / "docs" / "getting-started.md", ROOT / "README.md"]
RESTORE_SH = ROOT / "scripts" / "restore.sh"

SHELL_LANGUAGES = {"sh", "bash", "shell", "console", "shell-session"}
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w-]*)")
PLACEHOLDER = re.compile(r"<[^<>\s]+>")
DUMMY = "1"  # valid as a string, a path, a number: a placeholder must never decide whether a line parses
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# commands that run another one (the cron line: flock -n LOCK nice -n 10 ionice -c 2 -n 7 restic-orch ...)
WRAPPERS = {"flock", "nice", "ionice", "timeout", "env", "time", "exec", "bash"}
# restore.sh's own options (the bootstrap install); everything else goes to `restic-orch restore`
RESTORE_SH_OPTIONS = {"--bootstrap", "--sha256", "--region", "--prefix"}
OPERATORS = {"|", "||", "&", "&&", ";", ";;", ">", ">>", "<", "<<", ">&", "<&", "&>", "&>>", "(", ")", "|&"}


@dataclass(frozen=True)
class Command:
    file: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}: {self.text}"


# ---------------------------------------------------------------- extraction
def _joined(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Join backslash continuations; yield (first line number, logical line)."""
    start, parts = 0, []
    for number, raw in lines:
        if not parts:
            start = number
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped.strip())
        yield start, " ".join(p for p in parts if p)
        parts = []
    if parts:
        yield start, " ".join(p for p in parts if p)


def _strip_prompt(text: str) -> str:
    for prefix in ("# ", "$ "):
        if text.startswith(prefix):
            text = text[len(prefix):].lstrip()
    if text.startswith("sudo "):
        text = text[len("sudo "):].lstrip()
    return text


def _program(word: str) -> str | None:
    """'restic-orch' or 'restore.sh' when the word names one of them (a path prefix is allowed)."""
    if word == "restic-orch" or word.endswith("/bin/restic-orch"):
        return "restic-orch"
    # the checkout's scripts/, the bundle's copy fetched into /root, the installed share/restic-orch/
    if word in ("./restore.sh", "bash:restore.sh") or word.endswith("/restore.sh"):
        return "restore.sh"
    return None


def _from_program(words: list[str]) -> list[str]:
    """The words from the program on (leading VAR=value and wrapper commands dropped); [] when none."""
    words = list(words)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    if words[:2] == ["bash", "restore.sh"]:  # the copy fetched from the bootstrap bundle, run by bash
        words = ["bash:restore.sh", *words[2:]]
    if words and words[0] in WRAPPERS:
        words = next((words[i:] for i, w in enumerate(words) if _program(w)), [])
    return words if words and _program(words[0]) else []


def _is_command(text: str) -> bool:
    return bool(_from_program(text.split()))


def commands_in_markdown(path: Path) -> list[Command]:
    """Commands of the fenced sh/bash blocks; other blocks are skipped (their fences still close)."""
    found: list[Command] = []
    state: str | None = None  # None outside, "sh" inside a shell block, "other" inside another block
    block: list[tuple[int, str]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(raw)
        if state is None:
            if match:
                state = "sh" if match.group(2).lower() in SHELL_LANGUAGES else "other"
                block = []
            continue
        if match and not match.group(2):
            if state == "sh":
                found += _commands_in(path, block)
            state = None
            continue
        if state == "sh":
            block.append((number, raw))
    return found


def _commands_in(path: Path, lines: list[tuple[int, str]]) -> list[Command]:
    out = []
    for number, text in _joined(lines):
        text = _strip_prompt(text.strip())
        if _is_command(text):
            out.append(Command(path, number, text))
    return out


def commands_in_restore_sh(path: Path = RESTORE_SH) -> list[Command]:
    """The example lines of the script's header comment (from line 2 to the first non-comment line)."""
    header: list[tuple[int, str]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if number == 1 and raw.startswith("#!"):
            continue
        if not raw.startswith("#"):
            break
        header.append((number, raw[1:]))
    return _commands_in(path, header)


def documented_commands() -> list[Command]:
    found: list[Command] = []
    for path in MARKDOWN_SOURCES:
        if path.exists():
            found += commands_in_markdown(path)
    if RESTORE_SH.exists():
        found += commands_in_restore_sh()
    return found


# ---------------------------------------------------------------- parsing with the real CLI
def to_cli_args(text: str) -> list[str]:
    """The arguments `restic-orch` would receive (restore.sh lines become `restore ...`)."""
    text = PLACEHOLDER.sub(DUMMY, _strip_prompt(text.strip()))
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token in OPERATORS or (token and set(token) <= set("();<>|&")):
            if words and words[-1].isdigit() and token.startswith((">", "<")):
                words.pop()  # 2>&1, 2>/dev/null: a file descriptor, not an argument
            break
        words.append(token)
    words = _from_program(words)
    if not words:
        raise ValueError(f"not a restic-orch command: {text!r}")
    program = _program(words[0])
    args = words[1:]
    if program == "restic-orch":
        return args
    kept: list[str] = []
    config: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--install":
            pass
        elif arg in RESTORE_SH_OPTIONS:
            index += 1
        elif arg == "--config":
            if index + 1 >= len(args):
                raise click.UsageError("restore.sh: --config needs a FILE")
            config = ["--config", args[index + 1]]
            index += 1
        elif arg.startswith("--config="):
            config = ["--config", arg.split("=", 1)[1]]
        else:
            kept.append(arg)
        index += 1
    return [*config, "restore", *kept]


@contextmanager
def _paths_need_not_exist(command: click.Command) -> Iterator[None]:
    """Parse only: `--password-file` & co. check that the file exists; the docs' example paths need not."""
    changed: list[click.Path] = []

    def walk(cmd: click.Command) -> None:
        for param in cmd.params:
            if isinstance(param.type, click.Path) and param.type.exists:
                param.type.exists = False
                changed.append(param.type)
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                walk(sub)

    walk(command)
    try:
        yield
    finally:
        for path_type in changed:
            path_type.exists = True


def check_args(args: list[str]) -> list[str]:
    """Parse args as `restic-orch ARGS` down to the leaf command; raise click.UsageError when they are wrong.

    Returns the command path, e.g. ['restic-orch', 'restore'].
    """
    names = ["restic-orch"]
    with _paths_need_not_exist(main):
        try:
            ctx = main.make_context("restic-orch", list(args), resilient_parsing=False)
        except click.exceptions.Exit as exc:  # --help, --version
            if exc.exit_code:
                raise
            return names
        command: click.Command = main
        while isinstance(command, click.Group):
            rest = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") \
                else [*ctx.protected_args, *ctx.args]
            if not rest:
                raise click.UsageError(f"{' '.join(names)}: missing command", ctx)
            name, sub, sub_args = command.resolve_command(ctx, rest)
            if sub is None or name is None:
                raise click.UsageError(f"{' '.join(names)}: no such command {rest[0]!r}", ctx)
            names.append(name)
            try:
                ctx = sub.make_context(name, sub_args, parent=ctx, resilient_parsing=False)
            except click.exceptions.Exit as exc:
                if exc.exit_code:
                    raise
                return names
            command = sub
    return names


def check_line(text: str) -> list[str]:
    return check_args(to_cli_args(text))


# ---------------------------------------------------------------- the tests
COMMANDS = documented_commands()


def test_the_docs_hold_commands():
    runbook = [c for c in COMMANDS if c.file == RUNBOOK]
    assert len(runbook) >= 30, f"only {len(runbook)} commands found in {RUNBOOK}"
    assert any(c.file == RESTORE_SH for c in COMMANDS), "no example found in the header of scripts/restore.sh"
    assert any("restore" in check_line(c.text) for c in runbook)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.file.name}:{c.line}")
def test_documented_command_parses(command: Command):
    try:
        path = check_line(command.text)
    except (click.UsageError, click.BadParameter, ValueError) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        pytest.fail(f"{command}\n  -> {message}")
    assert len(path) >= 2 or "--help" in command.text or "--version" in command.text, str(command)


@pytest.mark.parametrize("line", [
    "restic-orch restore --frm offsite",                       # renamed option
    "restic-orch restore --from nowhere",                      # bad choice
    "restic-orch restore --as-vmid abc",                       # not an integer
    "restic-orch env",                                         # missing argument
    "restic-orch restor --only ct:102",                        # no such command
    "restic-orch config",                                      # group without its sub-command
    "restic-orch config check",                                # no such sub-command
    "restic-orch drill --scenario everything",                 # bad choice
    "restic-orch snapshots --repo remote",                     # bad choice
    "scripts/restore.sh --config /etc/x.yml --install --frm offsite",
    "sudo restic-orch backup --only-kinds proxmox",
])
def test_checker_rejects_wrong_lines(line: str):
    with pytest.raises(click.UsageError):
        check_line(line)


@pytest.mark.parametrize(("line", "expected"), [
    ("restic-orch --config /etc/restic-orch/config.yml backup --dry-run", ["restic-orch", "backup"]),
    ("# restic-orch status", ["restic-orch", "status"]),
    ("restic-orch env offsite > /root/offsite.env && . /root/offsite.env", ["restic-orch", "env"]),
    ("restic-orch restore --only db:<source>/<db> --target-db <name>_restored --as-vmid <vmid>",
     ["restic-orch", "restore"]),
    ("scripts/restore.sh --config /etc/x.yml --install --from offsite --only ct:102 --yes --force",
     ["restic-orch", "restore"]),
    ("/opt/restic-orch/bin/restic-orch config show 2>/dev/null", ["restic-orch", "config", "show"]),
    ("flock -n /run/lock/restic-orch.lock nice -n 10 ionice -c 2 -n 7 /opt/restic-orch/bin/restic-orch -q"
     " --config /etc/restic-orch/config.yml drill --scenario full", ["restic-orch", "drill"]),
    ("RESTIC_ORCH_CONFIG=/etc/x.yml restic-orch check --read-data-subset 5%", ["restic-orch", "check"]),
    ("restic-orch restore --repo s3:https://h/b --password-file /nonexistent/pw --s3-env-file /nonexistent/s3",
     ["restic-orch", "restore"]),
])
def test_checker_accepts_right_lines(line: str, expected: list[str]):
    assert check_line(line) == expected


def test_restore_sh_lines_become_restore_commands():
    assert to_cli_args("scripts/restore.sh --config /etc/x.yml --install --dry-run") == \
        ["--config", "/etc/x.yml", "restore", "--dry-run"]
    assert to_cli_args("scripts/restore.sh --config=/etc/x.yml --yes") == ["--config", "/etc/x.yml", "restore", "--yes"]


def test_path_checks_are_restored_after_parsing():
    restore = main.commands["restore"]
    password = next(p for p in restore.params if p.name == "password_file")
    check_line("restic-orch restore --password-file /nonexistent/pw --dry-run")
    assert password.type.exists is True


def test_extraction_joins_continuations_and_skips_other_blocks(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text("\n".join([
        "```",
        "restic-orch not-a-shell-block",
        "```",
        "```sh",
        "# a comment",
        "$ restic-orch restore --from offsite \\",
        "    --only ct:102 --yes",
        "echo restic-orch",
        "```",
        "```bash",
        "sudo scripts/restore.sh --dry-run",
        "```",
    ]) + "\n")
    found = commands_in_markdown(doc)
    assert [(c.line, c.text) for c in found] == [
        (6, "restic-orch restore --from offsite --only ct:102 --yes"),
        (11, "scripts/restore.sh --dry-run"),
    ]


REQUIRED_SCENARIOS = {
    "host lost": r"host.*\blost\b|\blost\b.*host",
    "local disk lost": r"local.*disk.*lost",
    "container": r"container",
    "database": r"database",
    "Terraform state": r"terraform state",
    "Vault": r"vault",
    "password/keys lost": r"(password|keys?).*lost",
    "ransomware": r"ransomware",
}


def test_runbook_covers_every_scenario():
    text = RUNBOOK.read_text(encoding="utf-8")
    headings = [line.lstrip("#").strip().lower() for line in text.splitlines() if re.match(r"^#{1,6} ", line)]
    missing = [name for name, pattern in REQUIRED_SCENARIOS.items()
               if not any(re.search(pattern, h) for h in headings)]
    assert not missing, f"scenario headings missing from {RUNBOOK.name}: {missing}"
    for term in ("RTO", "RPO"):
        assert term in text
    for section in ("contacts", "checklist", "latest drill figures"):
        assert any(section in h for h in headings), f"no '{section}' heading in {RUNBOOK.name}"
    assert "docs/restore-tests/" in text
