# restic-orch: set-up, tests, demo on the simulated homelab, and the day-to-day commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB ?= .lab
CONFIG ?= $(or $(RESTIC_ORCH_CONFIG),/etc/restic-orch/config.yml)
PYTEST_ARGS ?=

.PHONY: setup apt venv test lint demo backup restore drill drill-lab rehearsal bench soak clean lab-up lab-down

setup: apt venv

# Debian packages, installed only when something is missing (root on a fresh Debian 12 host)
apt:
	@missing=""; \
	command -v restic >/dev/null || missing="$$missing restic"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	command -v mariadb >/dev/null || missing="$$missing mariadb-client"; \
	command -v crontab >/dev/null || missing="$$missing cron"; \
	command -v zstd >/dev/null || missing="$$missing zstd"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v borg >/dev/null || missing="$$missing borgbackup"; \
	command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || missing="$$missing logrotate"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  for svc in postgresql mariadb; do service $$svc stop >/dev/null 2>&1 || true; done; \
	fi
	@restic version

# runtime dependencies at the versions the role installs on the host (restic_orch/constraints.txt)
$(BIN)/.installed: pyproject.toml restic_orch/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c restic_orch/constraints.txt -e '.[lab,dev]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	cd ansible && ../$(BIN)/ansible-lint --offline -q

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile $(PYTEST_ARGS)

# the main job on the embedded simulated homelab: lab up, backup, list, lab down
demo: setup
	@# a fresh lab each time: moto keeps S3 only in memory, so an old local repository would meet an empty offsite
	@$(BIN)/restic-orch lab down --dir $(LAB) >/dev/null 2>&1 || true
	@rm -rf $(LAB)
	@$(BIN)/restic-orch lab up --dir $(LAB)
	@set -o pipefail; rc=0; \
	$(BIN)/restic-orch --config $(LAB)/config.yml backup || rc=$$?; \
	$(BIN)/restic-orch --config $(LAB)/config.yml snapshots --repo local; \
	$(BIN)/restic-orch --config $(LAB)/config.yml snapshots --repo offsite; \
	$(BIN)/restic-orch lab down --dir $(LAB); \
	echo; echo "config:   $(LAB)/config.yml"; \
	echo "run logs: $(LAB)/log/   summaries: $(LAB)/state/last-run.json   metrics: $(LAB)/metrics/"; \
	echo "local repository: $(LAB)/repo   (restic-orch --config $(LAB)/config.yml env local)"; \
	exit $$rc

lab-up: setup
	$(BIN)/restic-orch lab up --dir $(LAB)

lab-down:
	$(BIN)/restic-orch lab down --dir $(LAB)

backup:
	$(BIN)/restic-orch --config $(CONFIG) backup

restore:
	scripts/restore.sh --config $(CONFIG)

# with a configuration: a drill of this host; without one: a full drill on the simulated homelab, whose
# report goes to docs/restore-tests/ (the committed evidence)
drill: setup
	@if [ -r "$(CONFIG)" ]; then $(BIN)/restic-orch --config $(CONFIG) drill; \
	else $(MAKE) --no-print-directory drill-lab; fi

drill-lab: setup
	@$(BIN)/restic-orch lab down --dir $(LAB) >/dev/null 2>&1 || true
	@rm -rf $(LAB)
	@$(BIN)/restic-orch lab up --dir $(LAB)
	@rc=0; $(BIN)/restic-orch -q --config $(LAB)/config.yml backup || rc=$$?; \
	if [ $$rc -le 3 ] && [ $$rc -ne 1 ]; then $(BIN)/restic-orch --config $(LAB)/config.yml drill --scenario full \
	  --report-dir docs/restore-tests --lab-note || rc=$$?; fi; \
	$(BIN)/restic-orch lab down --dir $(LAB); exit $$rc

# the host-lost scenario of the runbook, run as written on a blank host of the simulated lab (as root: it
# needs a private mount namespace); its dated report goes to docs/restore-tests/ (committed evidence)
rehearsal: setup
	$(BIN)/python -m restic_orch.lab.rehearsal --report-dir docs/restore-tests

bench: setup
	$(BIN)/python -m bench

# 30 simulated nights on a lab of its own, the lab's data changing and seeded faults every night, each night
# checked against the soak's own record; SOAK_ARGS e.g. "--seed 1234 --nights 12" (a failure prints its replay)
soak: setup
	$(BIN)/python -m soak --report docs/reliability.md $(SOAK_ARGS)

clean:
	-$(BIN)/restic-orch lab down --dir $(LAB) 2>/dev/null
	rm -rf $(LAB) .pytest_cache
