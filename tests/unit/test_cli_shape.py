"""The command line stays thin: one module per command whose click functions parse, call the library and render;
source kinds reach it only through the registry; every command that writes to a repository holds the one lock."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import restic_orch.commands
from restic_orch import cpucap, runner
from restic_orch.cli import main
from restic_orch.commands.common import Ctx
from restic_orch.config import load_config
from restic_orch.hooks import registry
from restic_orch.init import chunker_source, init_repositories
from restic_orch.lock import Busy, RunLock
from restic_orch.report import load_last
from restic_orch.runlog import recorded_run
from tests.configs import host_dirs

COMMANDS = Path(restic_orch.commands.__file__).parent
SHARED = {"__init__.py", "common.py"}
MAX_BODY_LINES = 30


def _command_modules() -> list[Path]:
    return [p for p in sorted(COMMANDS.glob("*.py")) if p.name not in SHARED]


def _is_click(decorator: ast.expr) -> bool:
    text = ast.unparse(decorator)
    return text.startswith("click.") or ".command(" in text or ".group(" in text


def _click_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and any(_is_click(d) for d in node.decorator_list)]


def _body_lines(function: ast.FunctionDef) -> int:
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]  # the docstring is the help text, not logic
    return function.end_lineno - body[0].lineno + 1


def _imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a module of restic_orch.commands, names included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = ["restic_orch", "commands"][: 3 - node.level]
                base = ".".join(package + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("module", _command_modules(), ids=lambda p: p.name)
def test_each_command_module_holds_short_click_functions(module: Path) -> None:
    functions = _click_functions(ast.parse(module.read_text(encoding="utf-8")))
    assert functions, f"{module.name} defines no click command"
    long = {f.name: _body_lines(f) for f in functions if _body_lines(f) > MAX_BODY_LINES}
    assert long == {}, f"click functions over {MAX_BODY_LINES} lines: move the logic into the library"


@pytest.mark.parametrize("module", sorted(COMMANDS.glob("*.py")), ids=lambda p: p.name)
def test_commands_reach_source_kinds_only_through_the_registry(module: Path) -> None:
    offending = []
    for line, name in _imported(ast.parse(module.read_text(encoding="utf-8"))):
        parts = name.split(".")
        inside_hooks = parts[:2] == ["restic_orch", "hooks"] or parts[0] == "hooks"
        if inside_hooks and "registry" not in parts:
            offending.append(f"line {line}: {name}")
    assert offending == []


def test_the_shape_checks_see_what_they_look_for() -> None:
    sample = ast.parse("from ..hooks import base\nfrom restic_orch.hooks.proxmox import X\n"
                       "from restic_orch.hooks import registry\n"
                       "@click.command('x')\ndef f():\n    '''help'''\n" + "    pass\n" * 31)
    names = [name for _, name in _imported(sample)]
    assert names[:2] == ["restic_orch.hooks.base", "restic_orch.hooks.proxmox.X"]
    assert [_body_lines(f) for f in _click_functions(sample)] == [31]


def _command(*path: str) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _option(command: click.Command, flag: str) -> click.Option:
    return next(p for p in command.params if isinstance(p, click.Option) and flag in p.opts)


def test_only_help_comes_from_the_registry() -> None:
    backup_help = _option(_command("backup"), "--only").help or ""
    assert all(kind in backup_help for kind in registry.kind_names())
    restore_help = _option(_command("restore"), "--only").help or ""
    assert restore_help == registry.selector_help()
    for prefix in registry.prefixes():
        assert f" {prefix}," in f" {restore_help.replace(':', ',')}", f"--only help lacks {prefix}"


def test_restore_offers_each_kind_option_and_drill_each_scenario() -> None:
    restore = _command("restore")
    for option in registry.restore_options():
        assert _option(restore, option.flag).name == option.name
    scenario = _option(_command("drill"), "--scenario")
    assert isinstance(scenario.type, click.Choice)
    assert list(scenario.type.choices) == list(registry.scenarios())


# ---------------------------------------------------------------- configuration, lock, run log
@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    secret = tmp_path / "restic-password"
    secret.write_text("s3cret-value\n")
    secret.chmod(0o600)
    path = tmp_path / "config.yml"
    path.write_text(host_dirs(tmp_path) + f"""\
limits:
  nice: 15
repositories:
  local:
    url: {tmp_path}/repo
    password_file: {secret}
    retention:
      keep_within_daily: 7d
""")
    return path


@pytest.fixture
def no_cap(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record priority and CPU-cap calls instead of applying them to the test process."""
    calls: list[str] = []
    monkeypatch.setattr(runner, "set_priority", lambda p: calls.append(f"priority {p.nice}"))
    monkeypatch.setattr(cpucap, "apply", lambda percent: calls.append("cap"))
    return calls


def test_loading_the_configuration_leaves_the_priority_alone(config_file: Path, no_cap: list[str]) -> None:
    niceness = os.nice(0)
    assert Ctx(config_file, False, 0).config().limits.nice == 15
    assert no_cap == [] and os.nice(0) == niceness


def test_recorded_run_holds_the_lock_and_saves_only_a_run_that_ended(config_file: Path, no_cap: list[str]) -> None:
    config = load_config(config_file)
    with recorded_run(config, "check", "check", cap_cpu=True) as run:
        with pytest.raises(Busy, match="pid .* check"):
            RunLock(config.state_dir, "other").acquire()
        assert run.log_file.parent == config.log_dir and run.summary.log_file == str(run.log_file)
        run.summary.finish("success")
    assert no_cap == ["priority 15", "cap"]
    assert load_last(config.state_dir, "check")["run_id"] == run.run_id
    with pytest.raises(RuntimeError), recorded_run(config, "drill", "drill full"):
        raise RuntimeError("boom")
    with recorded_run(config, "forget", "forget", record=False) as run:
        run.summary.finish("success")
    assert load_last(config.state_dir, "drill") is None and load_last(config.state_dir, "forget") is None
    RunLock(config.state_dir, "after").acquire()  # released every time


@pytest.mark.parametrize("args", [["check"], ["forget"]])
def test_writing_commands_exit_1_naming_the_holder(config_file: Path, no_cap: list[str], args: list[str]) -> None:
    config = load_config(config_file)
    with RunLock(config.state_dir, "backup 20260101T030000Z-abcd"):
        result = CliRunner().invoke(main, ["--config", str(config_file), *args])
    assert result.exit_code == 1
    assert "error: another restic-orch run holds" in result.stderr and "backup 20260101" in result.stderr


# ---------------------------------------------------------------- one rule for chunker parameters
class FakeRepo:
    def __init__(self, name: str, exists: bool) -> None:
        self.name, self._exists, self.copied_from = name, exists, "untouched"

    def exists(self) -> bool:
        return self._exists

    def init(self, copy_chunker_from: FakeRepo | None = None) -> None:
        self.copied_from = copy_chunker_from.name if copy_chunker_from else None


@pytest.mark.parametrize(("local", "offsite", "expected"), [
    (False, False, {"local": "created", "offsite": "created (chunker parameters of local)"}),
    (False, True, {"local": "created (chunker parameters of offsite)", "offsite": "exists"}),
    (True, False, {"local": "exists", "offsite": "created (chunker parameters of local)"}),
    (True, True, {"local": "exists", "offsite": "exists"}),
])
def test_a_new_repository_takes_the_chunker_parameters_of_the_other(monkeypatch: pytest.MonkeyPatch, local: bool,
                                                                      offsite: bool, expected: dict) -> None:
    repos = {"local": FakeRepo("local", local), "offsite": FakeRepo("offsite", offsite)}
    monkeypatch.setattr("restic_orch.repos.open_all", lambda config: repos)
    assert init_repositories(None) == expected  # type: ignore[arg-type]
    assert chunker_source("offsite", repos, {"local"}) is repos["local"]
    assert chunker_source("offsite", repos, set()) is None
