"""(r) The host-lost restore: RTO from offsite, per component, against the floor no orchestrator can beat.

After the last backup, the lab is emptied as on a new host (the fake PVE's guests destroyed, the lab's
databases dropped, the Terraform state bucket emptied, the vault files removed, no restic cache, no state
directory), then `restic-orch --json restore --from offsite --yes --force` brings everything back, timed end
to end (the RTO) and per component (the restore summary's steps).

The floor: raw `restic restore <same snapshot> --target <dir>` from the same offsite repository, then what
the data needs to be in service again, done with the services' own tools: the PVE restore of each archive
through the API (POST /nodes/{node}/lxc ostemplate=<archive> restore=1, the UPID waited for, then started
as it was backed up) and each database dump loaded with pg_restore / mariadb. Restic runs at the priority
and GOMAXPROCS the product gives its restic children, as raw restic (b) does. The targets (RTO < 30 min,
< 5 min on this lab, <= 1.2x the floor) are reported PASS/FAIL, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from proxmoxer import ProxmoxAPI

from restic_orch.lab import mariadb as labmaria
from restic_orch.lab import postgres as labpg
from restic_orch.lab import pve as labpve
from restic_orch.lab.s3 import empty_bucket

from .. import lab as blab
from .. import s3 as bs3
from ..context import Context, brief, du
from .product import commands_from_log, restic_orch

STORY_SECONDS = 30 * 60
LAB_SECONDS = 5 * 60
MAX_RATIO = 1.2
SYSTEM_DATABASES = {"postgres": {"postgres"},
                    "mariadb": {"information_schema", "mysql", "performance_schema", "sys"}}
TASK_TIMEOUT = 1800.0


# ---------------------------------------------------------------- the verdicts (pure)
def ratio(product_seconds: float, floor_seconds: float) -> float | None:
    """Product over floor, or None when there is no floor to compare with."""
    return round(product_seconds / floor_seconds, 2) if floor_seconds > 0 else None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def targets(rto: float, floor_seconds: float, restored: bool) -> list[dict[str, Any]]:
    """The three targets of the host-lost restore. A restore that did not bring everything back meets none:
    its time is not a recovery time."""
    r = ratio(rto, floor_seconds)
    note = "" if restored else " (the restore did not bring everything back)"
    rows = [
        {"target": "RTO < 30 min (the story)", "measured": f"{rto:.1f} s{note}",
         "ok": restored and rto < STORY_SECONDS},
        {"target": "RTO < 5 min on this lab (ours)", "measured": f"{rto:.1f} s{note}",
         "ok": restored and rto < LAB_SECONDS},
        {"target": f"RTO <= {MAX_RATIO}x the floor",
         "measured": f"{r}x ({rto:.1f} s vs {floor_seconds:.1f} s){note}" if r is not None else "no floor measured",
         "ok": restored and floor_seconds > 0 and rto <= MAX_RATIO * floor_seconds},  # unrounded
    ]
    for row in rows:
        row["verdict"] = verdict(row["ok"])
    return rows


def by_kind(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The restore summary's steps summed per selector prefix (ct, db, ...): count, seconds, all ok."""
    out: dict[str, dict[str, Any]] = {}
    for step in steps:
        key = step["component"].split(":", 1)[0]
        entry = out.setdefault(key, {"count": 0, "seconds": 0.0, "ok": True})
        entry["count"] += 1
        entry["seconds"] = round(entry["seconds"] + float(step.get("seconds", 0)), 3)
        entry["ok"] = entry["ok"] and step.get("result") == "ok"
    return out


# ---------------------------------------------------------------- the lane
def measure(ctx: Context) -> dict[str, Any]:
    """Empty the lab, restore it with the product from offsite, then measure the floor on the same snapshot."""
    lane = ctx.lanes["uncapped"]
    rdir = ctx.work / "restore"
    shutil.rmtree(rdir, ignore_errors=True)
    rdir.mkdir(parents=True)
    lane_cfg = yaml.safe_load(lane.config.read_text())
    out: dict[str, Any] = {"lane": lane.name, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                           "gomaxprocs": ctx.s.gomaxprocs, "priority": " ".join(blab.PRIORITY)}
    ctx.say("(r) host lost: emptying the lab as on a new host")
    before = inventory(ctx, lane_cfg)
    out["new_host"] = new_host(ctx, lane_cfg)
    out["product"] = product_restore(ctx, new_host_config(ctx, lane_cfg, rdir / "product"))
    out["back"] = {k: v == before[k] for k, v in inventory(ctx, lane_cfg).items()}
    out["floor"] = floor(ctx, lane_cfg, out["product"]["snapshot"], rdir / "floor")
    restored = out["product"]["status"] == "success" and all(out["back"].values())
    out["targets"] = targets(out["product"]["wall"], out["floor"]["seconds"], restored)
    out["ratio"] = ratio(out["product"]["wall"], out["floor"]["seconds"])
    for row in out["targets"]:
        ctx.say(f"   {row['verdict']}: {row['target']}: {row['measured']}")
    shutil.rmtree(rdir, ignore_errors=True)
    return out


def new_host_config(ctx: Context, lane_cfg: dict[str, Any], pdir: Path) -> Path:
    """The lane's configuration on a new host: empty state (no restic cache), and the Terraform writer's key
    that disaster day brings for the state bucket (the host's own key only reads it)."""
    cfg = json.loads(json.dumps(lane_cfg))
    for key in ("staging_dir", "state_dir", "log_dir"):
        cfg[key] = str(pdir / key.removesuffix("_dir"))
    cfg["monitoring"] = {"textfile_dir": str(pdir / "metrics")}
    writer = blab.state(ctx.lab_dir)["services"]["s3"].get("tfstate_writer_env_file")
    if writer and cfg["sources"].get("terraform_state"):
        cfg["sources"]["terraform_state"]["restore_env_file"] = writer
    pdir.mkdir(parents=True, exist_ok=True)
    path = pdir / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def product_restore(ctx: Context, config: Path) -> dict[str, Any]:
    """`restic-orch --json restore --from offsite --yes --force`, timed end to end; its steps per component."""
    ctx.say("(r) restic-orch restore --from offsite --yes --force")
    res = ctx.probe("restore-product", [*restic_orch(ctx), "--config", str(config), "--json", "restore",
                                        "--from", "offsite", "--yes", "--force"], "r-product")
    try:
        summary = json.loads(Path(res["stdout"]).read_text())
    except ValueError:
        raise RuntimeError(f"restore printed no summary (rc {res['rc']}): "
                           + Path(res["stderr"]).read_text()[-500:]) from None
    extra = summary.get("extra", {})
    steps = [{k: s.get(k) for k in ("component", "result", "seconds", "message")} for s in extra.get("steps", [])]
    out = brief(res) | {"status": summary["status"], "exit_code": summary["exit_code"],
                        "duration_seconds": summary.get("duration_seconds"), "snapshot": extra.get("snapshot"),
                        "snapshot_time": extra.get("snapshot_time"), "repository": extra.get("repository"),
                        "steps": steps, "by_kind": by_kind(steps), "failures": summary.get("failures", []),
                        # one `restic restore` fetches every artifact before the steps (restic_orch/prefetch.py)
                        "prefetch": extra.get("prefetch")}
    log_file = summary.get("log_file")
    if log_file and Path(log_file).exists():
        out["commands"] = commands_from_log(Path(log_file).read_text().splitlines())
    ctx.say(f"   {out['status']} in {res['wall']:.1f} s: " + ", ".join(
        f"{k} {v['count']} in {v['seconds']:.1f} s" for k, v in out["by_kind"].items()))
    return out


# ---------------------------------------------------------------- a new host
def _pve(lane_cfg: dict[str, Any]) -> tuple[Any, str]:
    """The node's API with the product's own token (it holds the restore rights), and the node's name."""
    src = lane_cfg["sources"]["proxmox"]
    token = Path(src["token_file"]).read_text().strip()
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")  # the lab's self-signed node
    api = ProxmoxAPI(src["host"], port=src["port"], user=src["user"], token_name=src["token_name"],
                     token_value=token, verify_ssl=False, backend="https", timeout=60)
    return api, src.get("node") or "pve1"


def wait_task(api: Any, node: str, upid: str, timeout: float = TASK_TIMEOUT) -> str:
    """Wait for a PVE task as a client does (0.1 s, backing off to 0.5 s); its exit status."""
    deadline, delay = time.monotonic() + timeout, 0.1
    while time.monotonic() < deadline:
        status = api.nodes(node).tasks(upid).status.get()
        if status.get("status") == "stopped":
            return str(status.get("exitstatus"))
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise RuntimeError(f"PVE task {upid} still running after {timeout:.0f} s")


def task_ok(status: str) -> bool:
    return status == "OK" or status.startswith("WARNINGS")


def inventory(ctx: Context, lane_cfg: dict[str, Any]) -> dict[str, Any]:
    """What a restore must bring back, seen from the services: running guests and user databases."""
    api, node = _pve(lane_cfg)
    svc = blab.state(ctx.lab_dir)["services"]
    return {"guests": sorted((int(c["vmid"]), c.get("status")) for c in api.nodes(node).lxc.get()),
            "databases": _databases(svc)}


def _databases(svc: dict[str, Any]) -> dict[str, list[str]]:
    pg = labpg.psql(svc["postgres"], "SELECT datname FROM pg_database WHERE NOT datistemplate;").split()
    my = labmaria.mariadb_sql(svc["mariadb"], "SHOW DATABASES;").split()
    return {"postgres": sorted(set(pg) - SYSTEM_DATABASES["postgres"]),
            "mariadb": sorted(set(my) - SYSTEM_DATABASES["mariadb"])}


def destroy_guests(lane_cfg: dict[str, Any]) -> list[int]:
    """Every container of the node stopped and destroyed with its volumes, through the API."""
    api, node = _pve(lane_cfg)
    gone = []
    for ct in api.nodes(node).lxc.get():
        vmid = int(ct["vmid"])
        status = wait_task(api, node, api.nodes(node).lxc(vmid).delete(force=1, purge=1))
        if not task_ok(status):
            raise RuntimeError(f"destroying CT {vmid}: {status}")
        gone.append(vmid)
    return sorted(gone)


def drop_databases(ctx: Context) -> dict[str, list[str]]:
    svc = blab.state(ctx.lab_dir)["services"]
    found = _databases(svc)
    for db in found["postgres"]:
        labpg.psql(svc["postgres"], f'DROP DATABASE "{db}" WITH (FORCE);')
    for db in found["mariadb"]:
        labmaria.mariadb_sql(svc["mariadb"], f"DROP DATABASE `{db}`;")
    return found


def new_host(ctx: Context, lane_cfg: dict[str, Any]) -> dict[str, Any]:
    """No guest, no user database, an empty state bucket, no vault file (untimed: the disaster itself)."""
    t0 = time.monotonic()
    st = blab.state(ctx.lab_dir)
    s3 = st["services"]["s3"]
    out: dict[str, Any] = {"guests_destroyed": destroy_guests(lane_cfg), "databases_dropped": drop_databases(ctx),
                           "state_objects_deleted": empty_bucket(s3, s3["buckets"]["tfstate"])}
    vault = st["vault"]["encrypted"] + st["vault"]["plaintext"]
    for path in vault:
        Path(path).unlink(missing_ok=True)
    out["vault_files_removed"] = len(vault)
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


# ---------------------------------------------------------------- the floor
def floor(ctx: Context, lane_cfg: dict[str, Any], snapshot: str | None, fdir: Path) -> dict[str, Any]:
    """raw restic restore of the snapshot, then PVE's restores of its archives and the databases' own loads,
    each on a node and servers emptied again (untimed) so that they restore into nothing, as the product did."""
    if not snapshot:
        return {"seconds": 0.0, "error": "the product's restore named no snapshot"}
    out: dict[str, Any] = {"restic_restore": restic_restore(ctx, lane_cfg, snapshot, fdir / "target")}
    day = next((fdir / "target").rglob("manifest.json")).parent
    artifacts = json.loads((day / "manifest.json").read_text())["artifacts"]
    ctx.say("(r) floor: emptying the node and the database servers again (untimed)")
    destroy_guests(lane_cfg)
    drop_databases(ctx)
    out["pve"] = pve_restores(ctx, lane_cfg, day, artifacts)
    out["databases"] = database_loads(ctx, day, artifacts)
    parts = {"restic restore": out["restic_restore"]["wall"],
             "PVE restore and start": sum(r["seconds"] for r in out["pve"].values()),
             "database loads": sum(r["wall"] for r in out["databases"].values())}
    out["parts"] = {k: round(v, 3) for k, v in parts.items()}
    out["seconds"] = round(sum(parts.values()), 3)
    out["restic_plus_pve_seconds"] = round(parts["restic restore"] + parts["PVE restore and start"], 3)
    ctx.say(f"   floor {out['seconds']:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in out["parts"].items()))
    shutil.rmtree(fdir, ignore_errors=True)
    return out


def restic_restore(ctx: Context, lane_cfg: dict[str, Any], snapshot: str, target: Path) -> dict[str, Any]:
    """The real restic binary on the same offsite repository, with a cache as empty as a new host's."""
    repo = lane_cfg["repositories"]["offsite"]
    env = dict(ctx.env, RESTIC_REPOSITORY=repo["url"], RESTIC_PASSWORD_FILE=str(repo["password_file"]),
               RESTIC_CACHE_DIR=str(target.parent / "cache"))
    if repo.get("env_file"):
        env.update(bs3._env(Path(repo["env_file"])))
    if ctx.s.gomaxprocs:
        env["GOMAXPROCS"] = str(ctx.s.gomaxprocs)
    opts = [a for k, v in (repo.get("options") or {}).items() for a in ("-o", f"{k}={v}")]
    ctx.say(f"(r) floor: restic restore {snapshot} --target <dir>")
    res = ctx.probe("restore-floor-restic", [*blab.PRIORITY, "restic", *opts, "restore", snapshot, "--target",
                                             str(target)], "r-floor", env=env)
    if res["rc"] != 0:
        raise RuntimeError(f"restic restore failed (rc {res['rc']}): " + Path(res["stderr"]).read_text()[-500:])
    return brief(res) | {"bytes": du(target)}


def pve_restores(ctx: Context, lane_cfg: dict[str, Any], day: Path, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """Each archive into the dump storage (a rename), POST /nodes/{node}/lxc restore=1, its UPID waited for,
    then started when it was running at backup time; timed per container, the fake node's CPU beside."""
    api, node = _pve(lane_cfg)
    src = lane_cfg["sources"]["proxmox"]
    dump = labpve.dump_dir(ctx.pve_root, src.get("storage") or "local")
    out: dict[str, Any] = {}
    for art in (a for a in artifacts if a["kind"] == "proxmox"):
        vmid, name = int(art["meta"]["vmid"]), Path(art["path"]).name
        ctx.say(f"(r) floor: PVE restore of CT {vmid}")
        cpu0, t0 = ctx.cpu_of("lab-pve"), time.monotonic()
        shutil.move(day / art["path"], dump / name)
        upid = api.nodes(node).lxc.post(vmid=vmid, ostemplate=f"{src.get('storage') or 'local'}:backup/{name}",
                                        restore=1, storage=src.get("restore_storage") or "local")
        status = wait_task(api, node, upid)
        t1 = time.monotonic()
        if task_ok(status) and art["meta"].get("status") == "running":
            status = wait_task(api, node, api.nodes(node).lxc(vmid).status.start.post())
        t2 = time.monotonic()
        (dump / name).unlink(missing_ok=True)
        out[str(vmid)] = {"status": status, "restore_seconds": round(t1 - t0, 3), "start_seconds": round(t2 - t1, 3),
                          "seconds": round(t2 - t0, 3), "archive_bytes": art["size"],
                          "lab_pve_cpu_s": round(ctx.cpu_of("lab-pve") - cpu0, 3)}
        if not task_ok(status):
            raise RuntimeError(f"floor: PVE restore of CT {vmid}: {status}")
    return out


def database_loads(ctx: Context, day: Path, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """Each database dump loaded as its server's own client does it, into a database created for it (the
    server-wide roles and users still exist here, so their dumps are left out)."""
    svc = blab.state(ctx.lab_dir)["services"]
    out: dict[str, Any] = {}
    for art in artifacts:
        db = str(art["meta"].get("database") or "")
        if art["kind"] not in ("postgres", "mysql") or not db or db.startswith("@"):
            continue
        ctx.say(f"(r) floor: load {art['component']}")
        dump = day / art["path"]
        if art["kind"] == "postgres":
            argv = _pg_load(svc["postgres"], db, dump)
        else:
            argv = _mariadb_load(svc["mariadb"], db, dump, art["meta"])
        res = ctx.probe(f"restore-floor-{art['kind']}-{db}", argv, "r-floor", env=_client_env(ctx))
        if res["rc"] != 0:
            raise RuntimeError(f"floor: loading {db} failed (rc {res['rc']}): "
                               + Path(res["stderr"]).read_text()[-500:])
        out[art["component"]] = brief(res) | {"dump_bytes": art["size"]}
    return out


def _client_env(ctx: Context) -> dict[str, str]:
    env = {k: v for k, v in ctx.env.items() if not k.startswith("PG")}
    return env | {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PGCLIENTENCODING": "UTF8"}


def _pg_load(info: dict[str, Any], db: str, dump: Path) -> list[str]:
    """CREATE DATABASE (untimed; over the server's own `postgres` database too, as the product does), then the
    timed `pg_restore --single-transaction` as the product runs it."""
    labpg.psql(info, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE);', "template1")
    labpg.psql(info, f'CREATE DATABASE "{db}";', "template1")
    binary = labpg.PG_BIN / "pg_restore"
    return [str(binary) if binary.exists() else "pg_restore", "--exit-on-error", "--single-transaction",
            "-h", info["socket_dir"], "-p", str(info["port"]), "-U", info["superuser"], "-d", db, str(dump)]


def _mariadb_load(info: dict[str, Any], db: str, dump: Path, meta: dict[str, Any]) -> list[str]:
    """CREATE DATABASE with the dump's charset (untimed), then the timed `mariadb <db> < dump`."""
    labmaria.mariadb_sql(info, f"DROP DATABASE IF EXISTS `{db}`;")
    create = f"CREATE DATABASE `{db}`"
    if meta.get("charset") and meta.get("collation"):
        create += f" CHARACTER SET {meta['charset']} COLLATE {meta['collation']}"
    labmaria.mariadb_sql(info, create + ";")
    client = shutil.which("mariadb") or "mariadb"
    return ["sh", "-c", 'exec "$0" --defaults-extra-file="$1" --default-character-set=utf8mb4 --database="$2" < "$3"',
            client, info["root_defaults_file"], db, str(dump)]
