"""The 30-night soak: restic-orch run night after night on its own simulated homelab, with a clock the soak
controls, the lab's data changing every night and seeded faults, each night checked against the soak's own
record of what the lab held. `python -m soak --help`; `make soak`; the report is docs/reliability.md's
"30-night soak" section.
"""
