"""Source kinds are declared once, in their hook modules, and reach the rest of the product through the registry.

Outside hooks/ only the configuration model (config.py: one section per kind) and the simulated homelab
(lab/: it plays the services themselves) may name a kind. Anything else that names one is a place a new kind
would have to be added by hand.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from restic_orch.hooks import registry

PACKAGE = Path(__file__).resolve().parents[2] / "restic_orch"
ALLOWED = {PACKAGE / "config.py"}
SECTIONS = {"proxmox", "postgres", "mysql", "terraform_state", "ansible_vault"}


def _modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "lab" not in p.relative_to(PACKAGE).parts
            and p not in ALLOWED]


def _kind_words() -> tuple[set[str], re.Pattern[str]]:
    names = set(registry.kind_names()) | {s for s in registry.scenarios() if s != registry.FULL_SCENARIO}
    prefix = re.compile(r"^({})(:|$)".format("|".join(map(re.escape, registry.prefixes()))))
    return names, prefix


def offences(source: str) -> list[str]:
    """The kind names, selector prefixes and per-kind config sections named in one module's code."""
    names, prefix = _kind_words()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in names or prefix.match(node.value):
                found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in SECTIONS and "sources" in ast.unparse(node.value):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_outside_hooks_names_a_source_kind(module: Path) -> None:
    assert offences(module.read_text(encoding="utf-8")) == []


def test_the_scan_finds_what_it_looks_for() -> None:
    # the check above passes on an empty scan too: prove it sees each way a kind could be named
    sample = ('PREFIX = {"ct": "proxmox"}\nx = f"db:{name}"\nif kind == "tfstate": pass\n'
              "hosts = config.sources.mysql\nscenario = 'container'\n")
    assert len(offences(sample)) == 6


def test_every_kind_declares_what_the_rest_needs() -> None:
    for cls in registry.hook_classes():
        spec = cls.spec
        assert spec.kind == cls.kind and spec.prefix and spec.examples
        assert spec.prefix in registry.prefixes()
    assert registry.default_selectors() == registry.prefixes()
    assert list(registry.scenarios())[0] == registry.FULL_SCENARIO
