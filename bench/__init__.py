"""Performance benchmark of restic-orch on the simulated homelab (`make bench`, `python -m bench --quick`).

Targets (story VI1/VI2) live here, never in a timed test. See docs/performance.md for the figures.
"""
