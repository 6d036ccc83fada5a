"""Which restores each night proves, and the closing ones: every component of the last night, one of every kept one.

Each night: from tonight's local snapshot a container, a VM, a database and a file (state, vault or host file);
from its offsite copy one file; from one older night still kept, one file. `quick`: tonight's local snapshot, one file.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from restic_orch.restic import Repo, Snapshot

from . import verify
from .judge import held_by
from .state import REPOS, Soak

GROUPS = (("ct:",), ("vm:",), ("db:",), verify.PLAIN)


def _pick(rng: random.Random, held: Iterable[str], prefixes: tuple[str, ...],
          avoid: frozenset[str] | set[str] = frozenset()) -> list[str]:
    choices = sorted(c for c in held if c.startswith(prefixes) and "/@" not in c and c not in avoid)
    return [rng.choice(choices)] if choices else []


def _check(soak: Soak, repo: Repo, snap: Snapshot, number: int, wanted: list[str], done: verify.Verified) -> None:
    record = soak.records[number]
    wanted = [c for c in wanted if c in record]
    if wanted:
        verify.restore(soak.lab, repo, snap, wanted, record, f"{repo.name} night {number}", done)


def nightly(soak: Soak, number: int, after: dict[str, dict[str, Snapshot]], rng: random.Random) -> verify.Verified:
    done = verify.Verified()
    repos = soak.lab.repos()
    local = soak.by_night(after["local"]).get(number)
    offsite = soak.by_night(after["offsite"]).get(number)
    picked: set[str] = set()
    if local:
        held = held_by(soak, repos["local"], local[0])
        groups = (verify.PLAIN,) if soak.options.quick else GROUPS
        wanted = [c for prefixes in groups for c in _pick(rng, held, prefixes)]
        picked.update(wanted)
        _check(soak, repos["local"], local[0], number, wanted, done)
    if soak.options.quick:
        return done
    if offsite:
        held = held_by(soak, repos["offsite"], offsite[0])
        _check(soak, repos["offsite"], offsite[0], number, _pick(rng, held, verify.PLAIN, picked), done)
    older = [(name, n, snaps[0]) for name in REPOS for n, snaps in soak.by_night(after[name]).items()
             if n and n != number]
    if older:
        name, n, snap = rng.choice(sorted(older, key=lambda item: (item[0], item[1])))
        _check(soak, repos[name], snap, n, _pick(rng, held_by(soak, repos[name], snap), verify.PLAIN), done)
    return done


def closing(soak: Soak, after: dict[str, dict[str, Snapshot]], rng: random.Random) -> verify.Verified:
    """Every component of the last night from the newest local snapshot holding it (offsite when none does);
    then one file of every other kept night of both repositories."""
    done = verify.Verified()
    repos = soak.lab.repos()
    last = soak.nights[-1].number
    newest_first = [(name, n, snaps[0]) for name in REPOS
                    for n, snaps in sorted(soak.by_night(after[name]).items(), reverse=True) if n]
    wanted = sorted(soak.records[last])
    if soak.options.quick:  # a container, a VM, a database, and one state, vault and host file
        wanted = [c for prefix in ("ct:", "vm:", "db:", "tfstate:", "vault:", "files:")
                  for c in _pick(rng, wanted, (prefix,))]
    covered: set[tuple[str, int]] = set()
    for name, number, snap in newest_first:
        held = held_by(soak, repos[name], snap)
        mine = [c for c in wanted if c in held]
        if mine:
            _check(soak, repos[name], snap, number, mine, done)
            covered.add((name, number))
            wanted = [c for c in wanted if c not in held]
    done.problems += [f"no kept snapshot holds {c}" for c in wanted]
    if not soak.options.quick:
        for name, number, snap in newest_first:
            if (name, number) not in covered:
                held = held_by(soak, repos[name], snap)
                _check(soak, repos[name], snap, number, _pick(rng, held, verify.PLAIN), done)
    return done
