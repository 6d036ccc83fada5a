"""The one place that knows which kinds of source exist, and the selector grammar that names their pieces.

Each hook module declares its kind (`Hook.spec`, a SourceKind) and how its steps are described, sandboxed and
summarised (methods of its Hook class); restore, browse, drill, the CLI, render and bootstrap ask this module
and never name a kind themselves.

A selector names what a restore, a listing or a drill works on:

    <prefix>                 every component of that prefix (also <prefix>:all)
    <prefix>:<name>          one component: ct:101, db:main/appdb, tfstate:<key>, vault:<path>
    <prefix>:<group>         kinds with groups: every component of the group (db:main = each database of main)
    <prefix>:<name>:<path>   kinds whose artifacts are archives: one path inside (ct:102:/etc/nginx/nginx.conf)

A component whose last name part starts with "@" is server-wide (db:main/@globals): it is restored before the
others of its kind, and a drill verifies it without applying it (it would change the whole server).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Hook

SERVER_WIDE = "@"
GROUP_SEPARATOR = "/"
ALL = "all"
FULL_SCENARIO = "full"


class SelectionError(Exception):
    """The snapshot, selector or component asked for does not exist (a usage error: exit 2)."""


@dataclass(frozen=True)
class KindOption:
    """A restore option one kind understands (--as-vmid, --target-db): the CLI offers what the kinds declare."""

    name: str        # key in RestoreOptions.params
    flag: str        # the command-line flag
    type: type
    help: str


@dataclass(frozen=True)
class SourceKind:
    """What the rest of the product needs to know about a kind of source, declared by its hook module."""

    kind: str                          # the hook kind: staging sub-directory, snapshot tag kind:<kind>
    prefix: str                        # selector and component prefix (several kinds may share one: db)
    order: int                         # place in the restore order (the story's: containers first)
    examples: str                      # selector forms, for the help of --only
    groups: bool = False               # <prefix>:<group> selects every component of a group
    inner_paths: bool = False          # <prefix>:<name>:/path selects one path inside the artifact
    drill_scenario: str | None = None  # the `drill --scenario` that restores only this prefix
    redeploy_after: bool = False       # restoring it whole calls for the configured redeploy commands
    options: tuple[KindOption, ...] = ()


@dataclass(frozen=True)
class Selector:
    prefix: str
    name: str = ""            # "" = every component of the prefix
    inner: str | None = None  # a path inside the artifact

    @property
    def text(self) -> str:
        return f"{self.prefix}:{self.name}" if self.name else self.prefix

    def matches(self, component: str) -> bool:
        prefix, _, name = component.partition(":")
        if prefix != self.prefix:
            return False
        if not self.name:
            return True
        if _specs_of(self.prefix)[0].groups and GROUP_SEPARATOR not in self.name:
            return name.split(GROUP_SEPARATOR, 1)[0] == self.name
        return name == self.name


# ---------------------------------------------------------------- the registry
def hook_classes() -> list[type[Hook]]:
    from . import hook_classes as classes

    return classes()


@cache
def _specs() -> tuple[SourceKind, ...]:
    return tuple(cls.spec for cls in hook_classes())


def kind_names() -> list[str]:
    return [spec.kind for spec in _specs()]


def hook_class(kind: str) -> type[Hook]:
    for cls in hook_classes():
        if cls.spec.kind == kind:
            return cls
    raise KeyError(kind)


def _specs_of(prefix: str) -> list[SourceKind]:
    return [spec for spec in _specs() if spec.prefix == prefix]


def prefixes() -> list[str]:
    """Every selector prefix, in restore order."""
    seen: dict[str, int] = {}
    for spec in _specs():
        seen.setdefault(spec.prefix, spec.order)
    return sorted(seen, key=lambda p: seen[p])


def kinds_of(prefix: str) -> set[str]:
    return {spec.kind for spec in _specs_of(prefix)}


def prefix_of(component: str) -> str:
    return component.partition(":")[0]


def is_server_wide(component: str) -> bool:
    return component.rsplit(GROUP_SEPARATOR, 1)[-1].startswith(SERVER_WIDE)


def rank(kind: str) -> float:
    """Place in the restore order; the redeploy step comes right after the kinds that call for it."""
    if kind == "redeploy":
        return max((s.order for s in _specs() if s.redeploy_after), default=0) + 0.5
    return next((s.order for s in _specs() if s.kind == kind), 99)


def calls_for_redeploy(kind: str) -> bool:
    return any(s.redeploy_after for s in _specs() if s.kind == kind)


def restore_options() -> list[KindOption]:
    """Each kind's own restore options, once each (two kinds may share one, like --target-db)."""
    found: dict[str, KindOption] = {}
    for spec in _specs():
        for option in spec.options:
            found.setdefault(option.name, option)
    return list(found.values())


def selector_help() -> str:
    examples: list[str] = []
    for spec in sorted(_specs(), key=lambda s: s.order):
        if spec.examples not in examples:
            examples.append(spec.examples)
    return "Comma-separated: " + ", ".join(examples) + "."


def scenarios() -> dict[str, list[str]]:
    """The drill scenarios: the whole snapshot, and one per kind that declares one."""
    found: dict[str, list[str]] = {FULL_SCENARIO: default_selectors()}
    for spec in sorted(_specs(), key=lambda s: s.order):
        if spec.drill_scenario and spec.drill_scenario not in found:
            found[spec.drill_scenario] = [spec.prefix]
    return found


def default_selectors() -> list[str]:
    """What a restore without --only brings back: every prefix."""
    return prefixes()


# ---------------------------------------------------------------- the grammar
def parse(text: str) -> Selector:
    """One selector; an unknown prefix or a relative inner path is a SelectionError naming what is known."""
    prefix, _, rest = text.strip().partition(":")
    specs = _specs_of(prefix)
    if not specs:
        raise SelectionError(f"unknown selector {text!r}: it must start with one of"
                             f" {', '.join(prefixes())} ({selector_help()[:-1].lower()})")
    if rest == ALL:
        rest = ""
    inner = None
    if specs[0].inner_paths and ":" in rest:
        rest, _, inner = rest.partition(":")
        if not inner.startswith("/"):
            raise SelectionError(f"{prefix}:{rest}:{inner}: the path inside must be absolute")
    return Selector(prefix, rest, inner)


def has_inner_paths(prefix: str) -> bool:
    """Whether `<prefix>:<name>:/path` can name a path inside this prefix's artifacts."""
    return any(spec.inner_paths for spec in _specs_of(prefix))


def has_kinds(snapshot_kinds: set[str], selectors: list[str]) -> bool:
    """Whether a snapshot holding these kinds can serve every selector (any kind of its prefix will do)."""
    return all(kinds_of(prefix_of(s)) & snapshot_kinds for s in selectors)
