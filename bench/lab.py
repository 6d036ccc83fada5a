"""The benchmark's lab: sized from the command line, per-lane configurations, day-2 churn.

Sizes: 4 containers x `ct_mib` (the fake PVE's generated root filesystems: a shared Debian-like base,
text, ELF binaries, gzip files and incompressible payloads), PostgreSQL + MariaDB seeded so that their
data is about `db_mib` together (one `db_scale` for both: ~7 MB + ~3.5 MB per unit), the lab's Terraform
states and Ansible Vault files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import yaml

from restic_orch.lab import manager
from restic_orch.lab import mariadb as labmaria
from restic_orch.lab import postgres as labpg

BYTES_PER_DB_SCALE = labpg.APPROX_BYTES_PER_SCALE + labmaria.APPROX_BYTES_PER_SCALE

WORDS = ("backup restore kernel socket cache request client server session token volume storage cluster "
         "node container process thread signal timeout retry error warning info debug user group mount "
         "device update install package release security patch nginx upstream latency").split()


def db_scale_for(db_mib: int) -> int:
    return max(1, round(db_mib * 2**20 / BYTES_PER_DB_SCALE))


def up(lab_dir: Path, ct_mib: int, db_mib: int) -> dict[str, Any]:
    lab_dir.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(lab_dir.parent, 0o755)  # noqa: S103 - postgres/mysql must traverse to their data dirs
    return manager.up(lab_dir, size_bytes=ct_mib * 2**20, db_scale=db_scale_for(db_mib))


def down(lab_dir: Path) -> list[str]:
    return manager.down(lab_dir)


def state(lab_dir: Path) -> dict[str, Any]:
    return manager.load(lab_dir)


def service_pids(lab_dir: Path) -> dict[str, int]:
    return {name: int(info["pid"]) for name, info in state(lab_dir).get("services", {}).items()}


def descendants(pid: int) -> list[int]:
    """pid and every process below it (scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def lane_config(lab_dir: Path, lane_dir: Path, *, offsite_bucket: str | None, compress: str = "0",
                gomaxprocs: int | None = 1, proxmox: dict[str, Any] | None = None,
                cpu_percent: float | None = None) -> Path:
    """The lab's config.yml with this lane's own staging, state, logs and repositories."""
    config = yaml.safe_load((lab_dir / "config.yml").read_text())
    lane_dir.mkdir(parents=True, exist_ok=True)
    config["staging_dir"] = str(lane_dir / "staging")
    config["state_dir"] = str(lane_dir / "state")
    config["log_dir"] = str(lane_dir / "log")
    config["monitoring"] = {"textfile_dir": str(lane_dir / "metrics")}
    config["drill"]["report_dir"] = str(lane_dir / "drills")
    config["repositories"]["local"]["url"] = str(lane_dir / "repo")
    # day 1 and day 2 run on the same calendar day here: keep_within_daily would forget day 1 and prune,
    # which a real day 2 never does; keep_within keeps both, and forget still runs (and finds nothing)
    config["repositories"]["local"]["retention"] = {"keep_within": "7d"}
    if offsite_bucket:
        offsite = config["repositories"]["offsite"]
        endpoint = "/".join(offsite["url"][len("s3:"):].split("/")[:3])  # scheme://host:port, past bucket and prefix
        offsite["url"] = f"s3:{endpoint}/{offsite_bucket}"
        offsite["retention"] = {"keep_within": "30d"}
        # the bench's own buckets: the lab's owner key (the host's key reaches only the lab's offsite bucket)
        s3 = state(lab_dir)["services"]["s3"]
        offsite["env_file"] = s3.get("root_env_file") or offsite.get("env_file")
    else:
        config["repositories"].pop("offsite", None)
    config["sources"]["proxmox"]["compress"] = compress
    config["sources"]["proxmox"].update(proxmox or {})
    # what the Ansible role deploys (backup_limits_*): nice 10, ionice best-effort 7, GOMAXPROCS 1
    config["limits"].update({"nice": NICE, "ionice_class": "best-effort", "ionice_level": IONICE_LEVEL,
                             "gomaxprocs": gomaxprocs, "cpu_percent": cpu_percent})
    path = lane_dir / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def s3_info(lab_dir: Path) -> dict[str, Any]:
    """Endpoint (through the lab's S3 proxy, like the product) and keys."""
    st = state(lab_dir)
    info = dict(st["services"]["s3"])
    if "s3proxy" in st["services"]:
        info["endpoint"] = st["services"]["s3proxy"]["endpoint"]
    return info


def container_bytes(pve_root: Path) -> dict[str, int]:
    out = {}
    for ct in sorted((pve_root / "lxc").iterdir()):
        total = 0
        for dirpath, _dirs, files in os.walk(ct / "rootfs"):
            for name in files:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    total += os.lstat(p).st_size
        out[ct.name] = total
    return out


def db_sizes(lab_dir: Path) -> dict[str, int]:
    svc = state(lab_dir)["services"]
    pg = int(labpg.psql(svc["postgres"], "SELECT sum(pg_database_size(datname)) FROM pg_database "
                                         "WHERE datname IN ('inventory','appdb');").strip() or 0)
    my = int(labmaria.mariadb_sql(svc["mariadb"], "SELECT sum(data_length + index_length) FROM "
                                                  "information_schema.tables WHERE table_schema IN "
                                                  "('blog','shop');").strip() or 0)
    return {"postgres": pg, "mariadb": my}


# --- day-2 churn ------------------------------------------------------------------------------------

def _text(rng: random.Random, nbytes: int, prefix: str) -> bytes:
    lines, size = [], 0
    i = 0
    while size < nbytes:
        line = f"{prefix} {i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))) + "\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines).encode()[:nbytes]


def _chown_like(path: Path, like: Path) -> None:
    st = os.lstat(like)
    os.lchown(path, st.st_uid, st.st_gid)


NICE, IONICE_LEVEL = 10, 7
# Raw restic (b) runs at the priority the product gives its restic children, as a hand-written cron
# script would (nice ... ionice ... restic): otherwise the floor would be measured at a higher priority.
PRIORITY = ["nice", "-n", str(NICE), "ionice", "-c", "2", "-n", str(IONICE_LEVEL)]

# Files that services rewrite in place, page by page: SQLite databases, PostgreSQL relations and WAL,
# MariaDB tablespaces, caches. Images, uploads and sealed Prometheus blocks are written once and
# never patched, so page writes into them would model no real service.
PAGED_PATTERNS = ("*.sqlite", "*.db", "*/var/lib/postgresql/*", "*/var/lib/mysql/*", "*/var/cache/*")
PAGE_TARGETS = ("data", "largest")


def _page_targets(files: list[tuple[Path, int]], how: str) -> list[tuple[Path, int]]:
    candidates = [f for f in files if "/var/log/" not in str(f[0])]
    if how == "data":
        data = [f for f in candidates if any(fnmatch.fnmatch(str(f[0]), pat) for pat in PAGED_PATTERNS)]
        candidates = data or candidates
    return sorted(candidates, key=lambda f: -f[1])[:3]


def churn_containers(pve_root: Path, fraction: float, seed: int = 2,
                     pages_into: str = "data") -> tuple[dict[str, Any], dict[str, set[str]]]:
    """Change about `fraction` of each container's bytes, as a night of a homelab does:
    30 % whole files replaced (package upgrades: binaries, libraries, 16 KiB - 8 MiB), 10 % in-place
    8 KiB page writes, 20 % appended to logs, 40 % new files (a new log, half; incompressible
    uploads/cache files, half). Page writes go into the three largest files services rewrite in place
    (`pages_into="data"`, PAGED_PATTERNS) or, as the first version of this model did, into the three
    largest files of any kind (`"largest"`: PNGs, uploads and sealed TSDB chunks included)."""
    if pages_into not in PAGE_TARGETS:
        raise ValueError(f"pages_into must be one of {PAGE_TARGETS}, not {pages_into!r}")
    report: dict[str, Any] = {}
    touched: dict[str, set[str]] = {"replaced": set(), "pages": set(), "appended": set(), "new": set()}
    for ct in sorted((pve_root / "lxc").iterdir()):
        root = ct / "rootfs"
        rng = random.Random(f"churn:{seed}:{ct.name}")
        files = _churnable_files(root)
        total = sum(size for _, size in files)
        budget = int(total * fraction)
        stats = {"bytes_before": total, "replaced": 0, "pages": 0, "appended": 0, "new": 0,
                 "files_replaced": 0, "files_paged": 0, "files_appended": 0, "files_new": 0}
        _replace_files(rng, files, int(budget * 0.3), stats, touched)
        _write_pages(rng, files, int(budget * 0.1), pages_into, stats, touched)
        _append_logs(rng, files, int(budget * 0.2), stats, touched)
        _new_files(rng, root, budget - stats["replaced"] - stats["pages"] - stats["appended"], stats, touched)
        stats["changed"] = stats["replaced"] + stats["pages"] + stats["appended"] + stats["new"]
        report[ct.name] = stats
    return report, touched


def _churnable_files(root: Path) -> list[tuple[Path, int]]:
    """Every regular file of the root filesystem with its size, sorted, temporary directories left out."""
    files = []
    for dirpath, _dirs, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.startswith(("tmp", "var/tmp")):
            continue
        for name in sorted(names):
            p = Path(dirpath) / name
            if not p.is_symlink():
                files.append((p, p.stat().st_size))
    files.sort()
    return files


def _replace_files(rng: random.Random, files: list[tuple[Path, int]], goal: int, stats: dict[str, int],
                   touched: dict[str, set[str]]) -> None:
    """Whole files replaced (same size, new content), e.g. upgraded binaries and libraries."""
    candidates = [(p, s) for p, s in files if 16 * 1024 <= s <= 8 * 2**20 and "/var/log/" not in str(p)]
    rng.shuffle(candidates)
    for p, size in candidates:
        if stats["replaced"] + size > goal:
            continue
        with open(p, "r+b") as fh:
            fh.write(rng.randbytes(size))
        stats["replaced"] += size
        stats["files_replaced"] += 1
        touched["replaced"].add(str(p))


def _write_pages(rng: random.Random, files: list[tuple[Path, int]], goal: int, pages_into: str,
                 stats: dict[str, int], touched: dict[str, set[str]]) -> None:
    """8 KiB pages rewritten in place in three data files."""
    data_files = _page_targets(files, pages_into)
    while stats["pages"] < goal and data_files:
        p, size = rng.choice(data_files)
        page = rng.randrange(0, max(1, size // 8192)) * 8192
        length = min(8192, goal - stats["pages"], size - page)
        with open(p, "r+b") as fh:
            fh.seek(page)
            fh.write(rng.randbytes(length))
        stats["pages"] += length
    stats["files_paged"] = len(data_files)
    touched["pages"].update(str(p) for p, _ in data_files)


def _append_logs(rng: random.Random, files: list[tuple[Path, int]], goal: int, stats: dict[str, int],
                 touched: dict[str, set[str]]) -> None:
    logs = [p for p, _ in files if "/var/log/" in str(p) and not p.name.endswith(".gz")]
    per = max(1, goal // max(1, len(logs)))
    for p in logs:
        data = _text(rng, min(per, goal - stats["appended"]), "Jan 13 03:00:00 churn")
        if not data:
            break
        with open(p, "ab") as fh:
            fh.write(data)
        stats["appended"] += len(data)
        stats["files_appended"] += 1
        touched["appended"].add(str(p))


def _new_files(rng: random.Random, root: Path, goal: int, stats: dict[str, int],
               touched: dict[str, set[str]]) -> None:
    """A new log (half of the goal) and new incompressible uploads/cache files (the other half)."""
    newdir = root / "srv" / "churn"
    if not newdir.exists():
        newdir.mkdir(parents=True)
        _chown_like(newdir, root / "srv")
    log_new = root / "var" / "log" / "churn-day2.log"
    data = _text(rng, goal // 2, "Jan 13 churn")
    log_new.write_bytes(data)
    _chown_like(log_new, log_new.parent)
    stats["new"] += len(data)
    stats["files_new"] += 1
    touched["new"].add(str(log_new))
    left, i = goal - goal // 2, 0
    while left > 0:
        n = min(left, rng.randint(256 * 1024, 4 * 2**20))
        target = newdir / f"upload-{i:03}.bin"
        target.write_bytes(rng.randbytes(n))
        _chown_like(target, newdir)
        stats["new"] += n
        stats["files_new"] += 1
        touched["new"].add(str(target))
        left -= n
        i += 1


# Rows change the way a homelab's applications change them: about 1 % of the rows are inserted (new
# issues, attachments, devices, orders, comments: appended at the end) and about 1 % are updated, chosen
# among the newest 10 % (recent issues get closed, recent orders shipped). Uniformly scattered updates
# (`id % 100 = k` over the whole table) make a logical dump ~100 % new every day: see docs/performance.md.
_PG_CHURN = {
    "appdb": """
CREATE TEMP TABLE m AS SELECT (SELECT max(id) FROM issues) AS issues, (SELECT max(id) FROM attachments) AS att;
UPDATE issues SET closed = NOT closed, body = body || ' (modifié)'
  WHERE id > (SELECT issues FROM m) * 0.9 AND id % 10 = 3;
INSERT INTO issues (repo_id, title, body, closed, created)
  SELECT repo_id, title || ' (suite)', body, false, now() FROM issues WHERE id % 100 = 5;
UPDATE attachments SET data = (SELECT decode(string_agg(md5('v2:' || attachments.id || ':' || j), ''), 'hex')
                               FROM generate_series(1, 64) AS j)
  WHERE id > (SELECT att FROM m) * 0.9 AND id % 10 = 7;
INSERT INTO attachments (issue_id, name, data)
  SELECT issue_id, name || '.v2', (SELECT decode(string_agg(md5('new:' || a.id || ':' || j), ''), 'hex')
                                   FROM generate_series(1, 64) AS j) FROM attachments a WHERE id % 100 = 9;
""",
    "inventory": """
UPDATE devices SET status = 'offline', config = config || '{"churn": 1}'::jsonb
  WHERE id > (SELECT max(id) FROM devices) * 0.9 AND id % 10 = 1;
INSERT INTO devices (site_id, name, serial, status, config, created)
  SELECT site_id, name || '-n', serial, status, config, now() FROM devices WHERE id % 100 = 13;
INSERT INTO ip_addresses (interface_id, address, dns_name)
  SELECT interface_id, address, 'new-' || dns_name FROM ip_addresses WHERE id % 100 = 17;
""",
}

_PG_TABLES = {"appdb": ["issues", "attachments"], "inventory": ["devices", "ip_addresses"]}
# share of the rows touched in each churned table (updated + inserted)
_TOUCH = 0.02


def _my_churn() -> str:
    blob = labmaria._blob_expr("CONCAT('v2:', id)", 1)
    return f"""
USE shop;
SET @p = (SELECT MAX(id) FROM products), @o = (SELECT MAX(id) FROM orders);
UPDATE products SET stock = stock - 1, image = {blob} WHERE id > @p * 0.9 AND id % 10 = 7;
UPDATE orders SET status = 'shipped' WHERE id > @o * 0.9 AND id % 10 = 3;
INSERT INTO orders (customer_id, status, created) SELECT customer_id, 'new', NOW() FROM orders WHERE id % 100 = 5;
USE blog;
SET @w = (SELECT MAX(ID) FROM wp_posts);
UPDATE wp_posts SET post_content = CONCAT(post_content, ' Mise à jour.') WHERE ID > @w * 0.9 AND ID % 10 = 3;
INSERT INTO wp_comments (comment_post_ID, comment_author, comment_content, comment_approved, comment_date)
  SELECT comment_post_ID, comment_author, CONCAT(comment_content, ' (réponse)'), '1', NOW()
  FROM wp_comments WHERE comment_ID % 100 = 5;
"""


def churn_databases(lab_dir: Path) -> dict[str, Any]:
    """Insert ~1 % and update ~1 % of the rows of the big tables; estimate the bytes that changed as
    2 % x table size, summed over the touched tables."""
    svc = state(lab_dir)["services"]
    pg, my = svc["postgres"], svc["mariadb"]
    est = 0
    for db, tables in _PG_TABLES.items():
        for table in tables:
            est += int(_TOUCH * int(labpg.psql(pg, f"SELECT pg_table_size('{table}');", db).strip()))
        labpg.psql(pg, _PG_CHURN[db], db)
    sizes = labmaria.mariadb_sql(my, "SELECT table_name, data_length FROM information_schema.tables WHERE "
                                     "(table_schema, table_name) IN (('shop','products'), ('shop','orders'), "
                                     "('blog','wp_posts'), ('blog','wp_comments'));")
    for line in sizes.strip().splitlines():
        est += int(_TOUCH * int(line.split("\t")[1]))
    labmaria.mariadb_sql(my, _my_churn())
    return {"db_changed_bytes_est": est, "touched_share": _TOUCH}


def churn_tfstate(lab_dir: Path) -> dict[str, Any]:
    from restic_orch.lab import s3 as labs3

    info = state(lab_dir)["services"]["s3"]
    client = labs3.s3_client(info)
    key = "env:/prod/infra/terraform.tfstate"
    body = json.loads(client.get_object(Bucket=info["buckets"]["tfstate"], Key=key)["Body"].read())
    body["serial"] += 1
    data = json.dumps(body, indent=2).encode()
    client.put_object(Bucket=info["buckets"]["tfstate"], Key=key, Body=data)
    return {"tfstate_changed_bytes": len(data)}


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
