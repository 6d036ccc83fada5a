"""A day of the homelab's life: what changes between two nightly runs, drawn from the night's own seed.

Rows inserted, updated and deleted in all four databases (MariaDB's triggers update other tables), now and then
a new role or account; files written, appended, re-moded and deleted in the containers' root filesystems; every
second night a few 64 KiB clusters rewritten in place in each VM's disk image (what its guest writes); one
Terraform state bumped (serial + 1, as `terraform apply` does); one vault file re-encrypted with new content;
now and then a host file edited. Returns one line per change, for the night's log.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from restic_orch.lab import pve, vault
from restic_orch.lab.mariadb import mariadb_sql
from restic_orch.lab.postgres import psql
from restic_orch.lab.pve.layout import list_qemu_vmids, list_vmids
from restic_orch.lab.pve.vms import CLUSTER
from restic_orch.lab.s3 import s3_client

from .lab import Lab
from .record import SANDBOX_VMID, vm_images

VM_EVERY = 2          # nights 2, 4, 6...: the VMs' guests write to their disks
VM_CLUSTERS = (1, 4)  # how many 64 KiB clusters a guest rewrites on such a night


def day(lab: Lab, night: int, rng: random.Random) -> list[str]:
    changes = containers(lab, night, rng)
    if night % VM_EVERY == 0:
        changes += vm_disks(lab, rng)
    changes += postgres(lab, night, rng)
    changes += mariadb(lab, night, rng)
    changes.append(terraform(lab, night, rng))
    changes.append(vault_file(lab, night, rng))
    if night % 3 == 0:
        changes.append(host_file(lab, night))
    return changes


def containers(lab: Lab, night: int, rng: random.Random) -> list[str]:
    vmids = [v for v in list_vmids(lab.pve_root) if v < SANDBOX_VMID]
    changes = []
    for vmid in rng.sample(vmids, rng.randint(1, 2)):
        root = pve.rootfs_dir(lab.pve_root, vmid)
        owner = os.stat(root)  # the container's root as the host sees it (100000 in an unprivileged CT)
        soak = root / "srv" / "soak"
        soak.mkdir(parents=True, exist_ok=True)
        new = soak / f"night-{night:03d}.bin"
        new.write_bytes(rng.randbytes(rng.randint(1, 48) * 1024))
        os.chmod(new, rng.choice((0o600, 0o640, 0o644)))
        motd = root / "etc" / "motd"
        with motd.open("a", encoding="utf-8") as handle:
            handle.write(f"night {night}: maintenance window — fenêtre de maintenance {rng.random():.6f}\n")
        for path in (soak, new, motd):
            os.chown(path, owner.st_uid, owner.st_gid)
        older = sorted(soak.glob("night-*.bin"))[:-1]
        if older and rng.random() < 0.4:
            gone = rng.choice(older)
            gone.unlink()
            changes.append(f"ct:{vmid} -{gone.name}")
        changes.append(f"ct:{vmid} +{new.name} ({new.stat().st_size} bytes), motd appended")
    return changes


def vm_disks(lab: Lab, rng: random.Random) -> list[str]:
    """Each VM's guest rewrites a few clusters of its first disk in place (the fake's VM 'runs': its raw image
    is the disk the guest writes to). The first cluster, the partition table, is left alone."""
    changes = []
    for vmid in [v for v in list_qemu_vmids(lab.pve_root) if v < SANDBOX_VMID]:
        images = vm_images(lab.pve_root, vmid)
        if not images:
            continue
        key, path = next(iter(images.items()))
        clusters = path.stat().st_size // CLUSTER
        if clusters < 2:
            continue
        picked = sorted(rng.sample(range(1, clusters), min(rng.randint(*VM_CLUSTERS), clusters - 1)))
        with path.open("r+b") as handle:
            for index in picked:
                handle.seek(index * CLUSTER)
                handle.write(rng.randbytes(CLUSTER))
        changes.append(f"vm:{vmid} {key}: clusters {', '.join(map(str, picked))} rewritten")
    return changes


def postgres(lab: Lab, night: int, rng: random.Random) -> list[str]:
    info = lab.services()["postgres"]
    count, user, device = rng.randint(1, 30), rng.randint(0, 150), rng.randint(0, 1500)
    psql(info, f"""
INSERT INTO issues (repo_id, title, body, closed, created)
SELECT (SELECT min(id) FROM repos) + i % 50, 'Soak night {night} #' || i || ' — nuit 夜', md5('{rng.random()}' || i),
       i % 2 = 0, timestamptz '2026-01-01 00:00+00' + ({night} * 1440 + i) * interval '1 minute'
FROM generate_series(1, {count}) AS i;
UPDATE users SET full_name = full_name || ' ·{night}'
WHERE id = (SELECT id FROM users ORDER BY id OFFSET {user} LIMIT 1);
DELETE FROM issues WHERE id = (SELECT id FROM issues ORDER BY id OFFSET {rng.randint(0, 4000)} LIMIT 1);
""", "appdb")  # noqa: S608 - numbers the soak drew, on the lab's own data
    psql(info, f"""
UPDATE devices SET status = 'offline', config = config || '{{"soak": {night}}}'::jsonb
WHERE id = (SELECT id FROM devices ORDER BY id OFFSET {device} LIMIT 1);
INSERT INTO sites (slug, name, description) VALUES ('soak-{night}', 'Site {night} — Zürich', 'nuit {night}')
ON CONFLICT (slug) DO UPDATE SET description = EXCLUDED.description || ' (again)';
""", "inventory")  # noqa: S608 - numbers the soak drew, on the lab's own data
    if night % 3 == 0:
        psql(info, f"CREATE ROLE soak_reader_{night} NOLOGIN; GRANT netbox_ro TO soak_reader_{night};")
    return [f"db:pg/appdb +{count} issues, 1 user renamed, 1 issue deleted", "db:pg/inventory +1 site, 1 device"]


def mariadb(lab: Lab, night: int, rng: random.Random) -> list[str]:
    info = lab.services()["mariadb"]
    comments = rng.randint(1, 20)
    mariadb_sql(info, f"""
SET @post = (SELECT ID FROM wp_posts ORDER BY ID LIMIT 1 OFFSET {rng.randint(0, 900)});
INSERT INTO wp_comments (comment_post_ID, comment_author, comment_content, comment_approved, comment_date)
SELECT @post, 'Soak {night}',
       CONCAT('nuit {night} — 夜 ', seq, ' {rng.random()}'), '1', '2026-01-01' + INTERVAL {night} DAY
FROM seq_1_to_{comments};
UPDATE wp_options SET option_value = CONCAT('Carnet de bord — nuit ', {night}) WHERE option_name = 'blogname';
""", "blog")  # noqa: S608 - numbers the soak drew, on the lab's own data
    mariadb_sql(info, f"""
INSERT INTO orders (customer_id, status, created)
VALUES ((SELECT id FROM customers ORDER BY id LIMIT 1 OFFSET {rng.randint(0, 900)}), 'new',
        '2026-01-01' + INTERVAL {night} DAY);
SET @product = (SELECT id FROM products ORDER BY id LIMIT 1 OFFSET {rng.randint(0, 400)});
INSERT INTO order_items (order_id, product_id, qty, price)
VALUES (LAST_INSERT_ID(), @product, {rng.randint(1, 9)}, 19.99);
UPDATE customers SET country = '{rng.choice(("FR", "DE", "JP", "ES", "SE"))}'
WHERE id = (SELECT id FROM (SELECT id FROM customers ORDER BY id LIMIT 1 OFFSET {rng.randint(0, 900)}) AS c);
""", "shop")  # noqa: S608 - numbers the soak drew, on the lab's own data
    if night % 4 == 0:
        mariadb_sql(info, f"CREATE USER 'soak_{night}'@'localhost' ACCOUNT LOCK;")
    return [f"db:mariadb/blog +{comments} comments (trigger: comment counts)",
            "db:mariadb/shop +1 order (trigger: stock), 1 customer moved"]


def terraform(lab: Lab, night: int, rng: random.Random) -> str:
    info = lab.services()["s3"]
    s3, bucket = s3_client(info, key="tfstate_writer"), info["buckets"]["tfstate"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    key = rng.choice(keys)
    state = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    state["serial"] += 1
    state.setdefault("outputs", {})["soak_night"] = {"value": night, "type": "number"}
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(state, indent=2).encode(), ContentType="application/json")
    return f"tfstate:{key} serial {state['serial']}"


def vault_file(lab: Lab, night: int, rng: random.Random) -> str:
    """New secrets in one vault file, encrypted again (a new salt: every byte changes)."""
    path = Path(rng.choice(lab.state["vault"]["encrypted"]))
    path.write_text(f"---\nvault_rotated_on_night: {night}\nvault_secret: \"{rng.randbytes(12).hex()}\"\n",
                    encoding="utf-8")
    vault.ansible_vault(lab.dir, "encrypt", str(path), password_file=Path(lab.state["vault"]["password_file"]))
    return f"vault:{path.name} in {path.parent.name} re-encrypted"


def host_file(lab: Lab, night: int) -> str:
    hosts = Path(lab.state["host"]["root"]) / "etc" / "hosts"
    with hosts.open("a", encoding="utf-8") as handle:
        handle.write(f"192.0.2.{100 + night % 100} soak-{night}.lab.invalid\n")
    return "files:etc/hosts +1 line"
