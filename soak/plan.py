"""The soak's calendar and its faults, from a seed alone (pure: no lab, no clock but the one passed in).

The plan is prefix-stable: night i's time offset, fault and draws depend on (seed, i) and on nothing after it,
so `python -m soak --seed N --nights K` replays exactly the first K nights of a longer soak with that seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

# the kinds of fault, and where each can strike
VARIANTS: dict[str, tuple[str, ...]] = {
    "sigkill": ("dump", "backup", "copy", "forget"),   # the run and all its children, in that phase
    "sigterm": ("dump", "backup", "copy", "forget"),   # the run alone (systemd stop, shutdown)
    "s3-down": ("start", "copy"),                      # the S3 proxy stopped before the run, or mid-copy
    "s3-slow": ("latency",),                           # every chunk delayed, throughput capped
    "db-down": ("postgres", "mariadb"),                # one database server stopped
    "pve-down": ("api",),                              # the Proxmox VE API stopped
    "vzdump-fail": ("101", "102", "103", "104"),       # one container's vzdump task fails
    "disk-full": ("preflight", "dumps"),               # staging too small from the start, or filled mid-run
    "stale-lock": ("killed-run", "foreign"),           # a dead run's leftovers, or a dead admin restic's lock
}
KINDS: tuple[str, ...] = tuple(VARIANTS)
CLEAN_EVERY = 4       # nights 1, 5, 9...: no fault (night 1 is the baseline); 22 faults in 30 nights
NIGHT_HOUR = 3        # the cron time


@dataclass(frozen=True)
class Fault:
    kind: str
    variant: str
    delay: float = 0.0  # seconds after the phase starts before the fault strikes (dump phase)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.variant}"


@dataclass(frozen=True)
class Night:
    number: int             # 1-based
    when: datetime          # the run's notion of now: restic's --time
    fault: Fault | None
    draw: int               # the night's own seed (mutations, samples)


def has_fault(number: int) -> bool:
    return (number - 1) % CLEAN_EVERY != 0


def fault_of(seed: int, number: int, kinds: tuple[str, ...] = KINDS) -> Fault | None:
    """The fault of night `number`: the j-th faulty night takes the j-th kind of a seeded shuffle of the kinds,
    reshuffled every len(kinds) faults, so that every kind comes before any repeats."""
    if not has_fault(number) or not kinds:
        return None
    j = sum(1 for n in range(1, number) if has_fault(n))
    cycle = random.Random(f"{seed}:cycle:{j // len(kinds)}").sample(list(kinds), len(kinds))
    kind = cycle[j % len(kinds)]
    rng = random.Random(f"{seed}:fault:{number}")
    return Fault(kind, rng.choice(VARIANTS[kind]), round(rng.uniform(0.0, 1.5), 2))


def night_times(count: int, every_days: int, today: date) -> list[datetime]:
    """03:00 UTC of each night, the last one the day before yesterday (yesterday is left for the recovery run
    after a killed last night): every time is in the past, as restic's forget needs (it ignores snapshots
    dated after its own clock when it looks for the newest)."""
    last = datetime.combine(today - timedelta(days=2), time(NIGHT_HOUR), tzinfo=UTC)
    return [last - timedelta(days=every_days * (count - i)) for i in range(1, count + 1)]


def recovery(seed: int, last: Night) -> Night:
    """The run the morning after a killed last night: a clean night the next day, so that the soak ends on a
    run that had to clean up after the kill (and on repositories without its stale locks)."""
    number = last.number + 1
    return Night(number, last.when + timedelta(days=1), None, random.Random(f"{seed}:night:{number}").randrange(2**31))


def plan(seed: int, nights: int, *, kinds: tuple[str, ...] = KINDS, every_days: int = 1,
         today: date | None = None) -> list[Night]:
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    times = night_times(nights, every_days, today or datetime.now(UTC).date())
    return [Night(i, when, fault_of(seed, i, kinds), random.Random(f"{seed}:night:{i}").randrange(2**31))
            for i, when in enumerate(times, 1)]
