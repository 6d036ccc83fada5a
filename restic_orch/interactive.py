"""Prompts for the interactive restore (a terminal, no --yes): snapshot, components, plan, confirmations."""

from __future__ import annotations

import click

from . import restic, tags
from .browse import Located
from .restore import Step


def choose_snapshot(snapshots: list[restic.Snapshot]) -> str:
    recent = snapshots[-15:]
    click.echo("Snapshots (newest last):")
    for index, snap in enumerate(recent, 1):
        status = tags.status(snap) or "?"
        kinds = ",".join(tags.kinds(snap))
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


class Prompts:
    """These prompts as the restore_setup.Chooser a restore on a terminal asks its questions through."""

    def choose_snapshot(self, snapshots: list[restic.Snapshot]) -> str:
        return choose_snapshot(snapshots)

    def choose_components(self, located: Located) -> list[str]:
        return choose_components(located)
