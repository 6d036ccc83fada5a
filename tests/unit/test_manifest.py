"""manifest.json keeps its shape (restore reads old snapshots) and is read back robustly as a Manifest."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from restic_orch import pipeline, staging
from restic_orch.config import Config
from restic_orch.hooks.base import Artifact, DumpContext, DumpOutcome, Hook, Notice
from restic_orch.report import RunSummary
from restic_orch.staging import Manifest

# the keys, in order, every version so far has written
KEYS = ["format", "run_id", "host", "started", "restic_orch", "restic", "day", "hostname", "tools", "artifacts",
        "failures", "notices", "config", "finished_dumps", "status"]


def _artifact(kind: str = "files", path: str = "files/a.tar") -> Artifact:
    return Artifact(component=f"{kind}:a", kind=kind, source="main", path=path, size=3, sha256="ab" * 32,
                    meta={"rows": {"t": 1}})


def _manifest() -> Manifest:
    return Manifest(run_id="r1", host="pve1", started="2026-11-26T03:00:00+00:00", restic_orch="1.0",
                    restic="0.16.4", day="2026-11-26", hostname="pve1.lan", tools={"tar": "1.35"},
                    artifacts=[_artifact(), _artifact("other", "other/b.dump")],
                    failures=[{"kind": "k", "source": "s", "component": "", "message": "down"}],
                    config={"host": "pve1"})


def test_the_json_has_the_keys_and_order_of_earlier_versions(tmp_path):
    manifest = _manifest()
    manifest.finish_dumps(datetime(2026, 11, 26, 3, 5, tzinfo=UTC))
    path = staging.write_manifest(tmp_path, manifest)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == KEYS
    assert data["format"] == 1 and data["status"] == "partial"
    assert data["finished_dumps"] == "2026-11-26T03:05:00+00:00"
    assert data["artifacts"][0] == {"component": "files:a", "kind": "files", "source": "main",
                                    "path": "files/a.tar", "size": 3, "sha256": "ab" * 32,
                                    "meta": {"rows": {"t": 1}}}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert not (tmp_path / "manifest.json.tmp").exists()


def test_a_manifest_reads_back_as_it_was_written(tmp_path):
    manifest = _manifest()
    manifest.finish_dumps()
    staging.write_manifest(tmp_path, manifest)
    again = staging.read_manifest(tmp_path)
    assert again == manifest
    assert all(isinstance(a, Artifact) for a in again.artifacts)
    assert again.to_json() == manifest.to_json()


def test_status_is_complete_without_failures():
    manifest = Manifest(artifacts=[_artifact()])
    manifest.finish_dumps()
    assert manifest.status == staging.COMPLETE and manifest.finished_dumps
    assert manifest.kinds() == ["files"]


def test_an_older_or_partial_manifest_takes_defaults():
    # what bench/stage.py writes, with an artifact lacking meta and sha256 and a null where a list belongs
    old = {"format": 1, "run_id": "bench", "notices": None, "unknown_key": 5,
           "artifacts": [{"component": "x:1", "kind": "x", "source": "s", "path": "x/1", "size": 1}]}
    manifest = Manifest.from_json(old)
    assert manifest.run_id == "bench" and manifest.host == "" and manifest.status == ""
    assert manifest.notices == [] and manifest.failures == [] and manifest.tools == {} and manifest.config == {}
    assert manifest.artifacts == [Artifact(component="x:1", kind="x", source="s", path="x/1", size=1, sha256="")]
    assert "unknown_key" not in manifest.to_json()


def test_an_empty_object_is_an_empty_manifest():
    manifest = Manifest.from_json({})
    assert manifest.format == staging.FORMAT and manifest.artifacts == [] and manifest.kinds() == []


class _Writes(Hook):
    kind = "fake"

    def __init__(self, name: str) -> None:
        self.name = name

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        file = ctx.out_dir(self.kind) / f"{self.name}.bin"
        file.write_bytes(b"x" * 100)
        return DumpOutcome(artifacts=[ctx.artifact(file, component=f"fake:{self.name}", kind=self.kind,
                                                   source=self.name)],
                           notices=[Notice(self.kind, self.name, "heads up")], tools={"fake": "1.0"})


class _Crashes(Hook):
    kind = "broken"
    name = "b"

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        raise RuntimeError("bug")


def test_the_stage_phase_runs_each_hook_and_writes_the_manifest(tmp_path):
    config = Config.model_validate({
        "host": "pve1", "staging_dir": str(tmp_path / "staging"), "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "log"),
        "repositories": {"local": {"url": str(tmp_path / "repo"), "password_file": str(tmp_path / "pw"),
                                   "retention": None}}})
    day = staging.day_dir(tmp_path / "staging", datetime(2026, 11, 26).date())
    summary = RunSummary("backup", "r1", "pve1", "")
    manifest = Manifest(run_id="r1")
    pipeline.stage(config, [_Crashes(), _Writes("one")], day, summary, manifest)
    assert [p.name for p in summary.phases] == ["dump:broken:b", "dump:fake:one", "hash:wait"]
    assert manifest.status == "partial" and manifest.failures[0]["message"] == "RuntimeError: bug"
    assert manifest.tools == {"fake": "1.0"} and manifest.notices[0]["message"] == "heads up"
    written = staging.read_manifest(day)
    assert [a.path for a in written.artifacts] == ["fake/one.bin"] and len(written.artifacts[0].sha256) == 64
    assert summary.artifacts == 1 and summary.components == ["fake:one"]
    assert summary.bytes_staged >= 100
