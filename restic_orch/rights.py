"""Ask every configured source which rights its account lacks, before a run needs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from restic_orch.hooks import build_hooks
from restic_orch.hooks.base import MissingRight

from .config import Config
from .masking import mask


@dataclass
class RightsReport:
    missing: list[MissingRight] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # sources that could not be asked

    @property
    def ok(self) -> bool:
        return not self.missing and not self.errors

    @property
    def exit_code(self) -> int:
        """0 all held; 2 a right is missing (fix the setup, as for a configuration error); 1 a source
        could not be asked at all (down, bad token): nothing is known about its rights."""
        return 2 if self.missing else 1 if self.errors else 0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "missing": [m.to_json() for m in self.missing], "errors": self.errors}

    def human(self) -> str:
        if self.ok:
            return "every source's account holds the rights restic-orch needs"
        lines = [f"{m.kind} {m.source}: missing {m.right} (needed to {m.why})\n    {m.fix}" for m in self.missing]
        lines += [f"{e['kind']} {e['source']}: could not check: {e['error']}" for e in self.errors]
        return "\n".join(lines)


def check_rights(config: Config, operation: str = "all") -> RightsReport:
    report = RightsReport()
    for hook in build_hooks(config):
        try:
            # the hooks of one source (containers and VMs of one PVE) share one account: list each right once
            report.missing += [m for m in hook.missing_rights(operation)
                               if all((m.source, m.right) != (k.source, k.right) for k in report.missing)]
        except Exception as exc:  # one unreachable source must not hide another's missing rights
            report.errors.append({"kind": hook.kind, "source": hook.name,
                                  "error": mask(f"{type(exc).__name__}: {exc}")})
    return report
