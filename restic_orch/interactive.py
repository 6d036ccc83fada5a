"""Prompts for the interactive restore (a terminal, no --yes): snapshot, components, plan, confirmations."""

from __future__ import annotations

import click

from . import restic
from .browse import Located
from .restore import Step


def choose_snapshot(snapshots: list[restic.Snapshot]) -> str:
    recent = snapshots[-15:]
    click.echo("Snapshots (newest last):")
    for index, snap in enumerate(recent, 1):
        status = snap.tag_value("status") or "?"
        kinds = ",".join(t.split(":", 1)[1] for t in snap.tags if t.startswith("kind:"))
        click.echo(f"  {index:>2}) {snap.time:%Y-%m-%d %H:%M}  {snap.short_id}  {status:<8} {kinds}")
    choice = click.prompt("Snapshot", type=click.IntRange(1, len(recent)), default=len(recent))
    return recent[choice - 1].id


def choose_components(located: Located) -> list[str]:
    components = sorted({a.component for a in located.artifacts})
    click.echo(f"Components in snapshot {located.snapshot.short_id}:")
    for index, component in enumerate(components, 1):
        click.echo(f"  {index:>2}) {component}")
    raw = click.prompt("Components to restore (numbers separated by commas, or 'all')", default="all")
    if raw.strip().lower() == "all":
        return []
    picked = []
    for part in raw.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= len(components):
            raise click.BadParameter(f"{part!r} is not one of 1..{len(components)}")
        picked.append(components[int(part) - 1])
    return picked


def show_plan(steps: list[Step]) -> None:
    click.echo("Plan:")
    for index, step in enumerate(steps, 1):
        mark = " [changes production]" if step.destructive else ""
        click.echo(f"  {index}. {step.description}{mark}")


def confirm_step(step: Step) -> bool:
    return click.confirm(f"Proceed: {step.description}?", default=False)
