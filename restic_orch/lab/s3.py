"""An S3 endpoint (moto server) for the simulated homelab: Terraform state + restic offsite.

The lab enforces the S3 policies the docs give a user. Each key is an IAM user with its policy read from
docs/s3-policies/ (the same JSON files docs/getting-started.md and docs/security.md show), with the docs'
bucket names and repository prefix replaced by the lab's:

| key (lab state)            | IAM user                    | policy file             | who holds it            |
|----------------------------|-----------------------------|-------------------------|-------------------------|
| `env_file`                 | restic-orch-offsite         | offsite-host.json       | the Proxmox host        |
| `admin_env_file`           | restic-orch-offsite-admin   | offsite-admin.json      | the trusted machine     |
| `tfstate_env_file`         | restic-orch-tfstate-ro      | tfstate-readonly.json   | the Proxmox host        |
| `tfstate_writer_env_file`  | terraform                   | tfstate-terraform.json  | Terraform (and restores)|
| `root_env_file`            | lab-root (`s3:*`)           | none: lab only          | the lab and its tests   |

The host's key lists, reads and writes, and deletes nothing but restic's lock files; both buckets have
versioning on, so an object the host overwrites keeps its previous version (a policy cannot forbid the
overwrite itself: docs/security.md). `lab-root` stands for the account owner that creates the buckets
(getting-started's Administrator user): the lab uses it for setup, the tests to look at and reset buckets.

moto accepts any signature until told otherwise, which would hide credential bugs. So the users, keys,
policies and buckets are made while auth is off, then signature checking and IAM authorization are
switched on (``/moto-api/reset-auth`` with 0 free calls): from then on a wrong secret is refused and every
call is checked against its user's policy.

moto keeps everything in memory (old versions too): lab data sent here must stay small.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any

from restic_orch.lab import procs
from restic_orch.lab.secrets import secrets_dir, write_secret

REGION = "us-east-1"
BUCKETS = {"tfstate": "tfstate", "offsite": "offsite"}
# the lab's restic repository sits under restic/ of its bucket (s3:<endpoint>/offsite/restic), as production's
# (s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic): the bootstrap bundle goes beside it
OFFSITE_PREFIX = "restic"
POLICY_DIR = Path(__file__).resolve().parents[2] / "docs" / "s3-policies"
# what the policy files name, replaced by the lab's buckets and prefix
DOC_OFFSITE_BUCKET, DOC_OFFSITE_PREFIX = "infra-oldevops-backups", "restic"
# prefixes of the offsite bucket beside the repository that the policies name: the same keys in the lab's bucket
# (bootstrap/: the bundle restic_orch/bundle.py publishes)
DOC_OTHER_PREFIXES = ("bootstrap",)
DOC_TFSTATE_BUCKET = "infra-oldevops-tfstate"
# lab state name -> (IAM user, policy file or None for s3:* on everything, env file name)
KEYS: dict[str, tuple[str, str | None, str]] = {
    "offsite": ("restic-orch-offsite", "offsite-host.json", "s3.env"),
    "offsite_admin": ("restic-orch-offsite-admin", "offsite-admin.json", "s3-offsite-admin.env"),
    "tfstate": ("restic-orch-tfstate-ro", "tfstate-readonly.json", "s3-tfstate.env"),
    "tfstate_writer": ("terraform", "tfstate-terraform.json", "s3-terraform.env"),
    "root": ("lab-root", None, "s3-root.env"),
}
# the lab state's field for each key's env file (`env_file` stays the host's offsite key)
ENV_FIELDS = {"offsite": "env_file", "offsite_admin": "admin_env_file", "tfstate": "tfstate_env_file",
              "tfstate_writer": "tfstate_writer_env_file", "root": "root_env_file"}
_ROOT_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}]}
_ARN = re.compile(r"arn:aws:s3:::([^/]+)(/.*)?")
# moto authorizes HEAD on a bucket (restic's "does the bucket exist") as s3:HeadBucket, an action IAM does not
# have: AWS checks s3:ListBucket for it. The lab adds the alias next to the docs' s3:ListBucket.
MOTO_ALIASES = {"s3:ListBucket": ["s3:HeadBucket"]}


def policy_text(name: str) -> str:
    """A policy file of docs/s3-policies/, as the docs show it."""
    return (POLICY_DIR / name).read_text(encoding="utf-8")


def lab_policy(name: str, buckets: dict[str, str] | None = None, prefix: str = OFFSITE_PREFIX) -> dict[str, Any]:
    """The docs' policy file with the docs' buckets and repository prefix replaced by the lab's.

    Only resources are rewritten, and moto's alias for s3:ListBucket added (MOTO_ALIASES); a resource naming
    another bucket, or an offsite object outside the docs' prefix and DOC_OTHER_PREFIXES, is an error rather
    than silently kept.
    """
    buckets = buckets or BUCKETS
    doc = json.loads(policy_text(name))

    def resource(arn: str) -> str:
        match = _ARN.fullmatch(arn)
        if match is None:
            raise ValueError(f"{name}: {arn}: not an S3 ARN")
        bucket, rest = match.group(1), match.group(2) or ""
        if bucket == DOC_TFSTATE_BUCKET:
            return f"arn:aws:s3:::{buckets['tfstate']}{rest}"
        if bucket != DOC_OFFSITE_BUCKET:
            raise ValueError(f"{name}: {arn}: names neither {DOC_OFFSITE_BUCKET} nor {DOC_TFSTATE_BUCKET}")
        if rest and not any(rest.startswith(f"/{other}/") for other in DOC_OTHER_PREFIXES):
            if not rest.startswith(f"/{DOC_OFFSITE_PREFIX}/"):
                raise ValueError(f"{name}: {arn}: outside the repository prefix {DOC_OFFSITE_PREFIX}/"
                                 f" and {', '.join(p + '/' for p in DOC_OTHER_PREFIXES)}")
            rest = "/" + (f"{prefix}/" if prefix else "") + rest[len(DOC_OFFSITE_PREFIX) + 2:]
        return f"arn:aws:s3:::{buckets['offsite']}{rest}"

    for statement in doc["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = actions + [alias for a in actions for alias in MOTO_ALIASES.get(a, [])]
        resources = statement["Resource"]
        statement["Resource"] = [resource(r) for r in resources] if isinstance(resources, list) \
            else resource(resources)
    return doc


def _client(service: str, endpoint: str, access_key: str, secret_key: str):  # noqa: ANN202 - boto3 client
    import boto3  # lab-only dependency: import lazily
    from botocore.config import Config

    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def s3_client(info: dict, secret_key: str | None = None, key: str = "root"):  # noqa: ANN201 - boto3 client
    """A boto3 S3 client for the lab endpoint: with lab-root's key by default (the lab and its tests look at
    and reset buckets with it), or with one of the lab's other keys (`key="offsite"`: the host's); a given
    secret_key replaces the key's real secret (to check that a wrong one is refused)."""
    creds = info["iam"][key]
    return _client("s3", info["endpoint"], creds["access_key"], secret_key or creds["secret_key"])


def _env_text(access_key: str, secret_key: str) -> str:
    return f"AWS_ACCESS_KEY_ID={access_key}\nAWS_SECRET_ACCESS_KEY={secret_key}\nAWS_DEFAULT_REGION={REGION}\n"


def start_s3(base_dir: Path, port: int | None = None) -> dict:
    """Start moto, create the IAM users (a policy each), their keys and the buckets, then enforce
    signatures and policies; return its info.

    Writes one env file per key under ``base_dir/secrets/`` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_DEFAULT_REGION: the format the product reads): ``env_file`` is the host's offsite key, and
    ``admin_env_file``, ``tfstate_env_file``, ``tfstate_writer_env_file``, ``root_env_file`` the others.
    """
    base_dir = Path(base_dir).resolve()
    home = base_dir / "s3"
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "moto.log"
    port = port or procs.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    pid = procs.start_daemon([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                             log_path, cwd=home)
    info: dict = {"kind": "s3", "pid": pid, "host": "127.0.0.1", "port": port, "endpoint": endpoint,
                  "region": REGION, "buckets": dict(BUCKETS), "offsite_prefix": OFFSITE_PREFIX,
                  "versioning": sorted(BUCKETS.values()), "log": str(log_path), "iam": {}}
    try:
        procs.wait_ready(procs.tcp_ready("127.0.0.1", port), pid=pid, log_path=log_path,
                         timeout=30, what="moto server")
        # Auth is still off: any credentials do for the setup calls.
        iam = _client("iam", endpoint, "setup", "setup")
        for name, (user, policy_file, _env) in KEYS.items():
            policy = lab_policy(policy_file) if policy_file else _ROOT_POLICY
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=policy_file or "lab-root",
                                PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            info["iam"][name] = {"user": user, "policy": policy_file, "access_key": key["AccessKeyId"],
                                  "secret_key": key["SecretAccessKey"]}
        s3 = _client("s3", endpoint, "setup", "setup")
        for bucket in BUCKETS.values():
            s3.create_bucket(Bucket=bucket)
            # Terraform's docs recommend versioning on the state bucket; on the offsite bucket it keeps
            # what the host's key overwrites (docs/security.md): do as a real setup
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        # text/plain: with urllib's default form content type, werkzeug eats the body.
        request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 endpoint
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
            headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()
    except Exception:
        stop_s3(info)
        raise
    for name, (_user, _policy, env_name) in KEYS.items():
        creds = info["iam"][name]
        path = write_secret(secrets_dir(base_dir) / env_name, _env_text(creds["access_key"], creds["secret_key"]))
        creds["env_file"] = info[ENV_FIELDS[name]] = str(path)
    # the host's offsite key, as before: what the lab's configuration gives the offsite repository
    host = info["iam"]["offsite"]
    info["access_key"], info["secret_key"] = host["access_key"], host["secret_key"]
    return info


def stop_s3(info: dict) -> None:
    """Stop moto (its data, in memory, is gone with it)."""
    procs.stop_pid(int(info["pid"]), timeout=10, match="moto")


def empty_bucket(info: dict, bucket: str, prefix: str = "") -> int:
    """Remove every object under prefix, old versions and delete markers included (a versioned bucket keeps
    what a plain delete removes, in moto's memory); returns how many versions were removed."""
    s3 = s3_client(info)
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        items = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(items), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": items[i:i + 1000], "Quiet": True})
        removed += len(items)
    return removed


# --- Terraform state ------------------------------------------------------------------

def _resource(rtype: str, name: str, provider: str, attributes: dict, *, mode: str = "managed",
              sensitive: list | None = None) -> dict:
    return {
        "mode": mode, "type": rtype, "name": name,
        "provider": f'provider["registry.terraform.io/{provider}"]',
        "instances": [{
            "schema_version": 0, "attributes": attributes,
            "sensitive_attributes": sensitive or [],
            **({"private": "bnVsbA=="} if mode == "managed" else {}),
        }],
    }


def _lxc(name: str, vmid: int, node: str, ip: str, memory: int, disk: str) -> dict:
    return _resource("proxmox_lxc", name, "telmate/proxmox", {
        "id": f"{node}/lxc/{vmid}", "vmid": vmid, "hostname": name, "target_node": node,
        "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "cores": 2, "memory": memory, "swap": 512, "onboot": True, "start": True,
        "unprivileged": True, "password": "lxc-root-pw-not-real", "tags": "terraform;lab",
        "features": [{"nesting": True, "fuse": False, "keyctl": False, "mount": ""}],
        "rootfs": [{"storage": "local-zfs", "size": disk, "volume": f"local-zfs:subvol-{vmid}-disk-0"}],
        "network": [{"name": "eth0", "bridge": "vmbr0", "ip": f"{ip}/24", "gw": "192.168.10.1",
                     "firewall": True, "hwaddr": f"BC:24:11:00:{vmid // 100:02d}:{vmid % 100:02d}"}],
        "description": "Géré par Terraform — ne pas modifier à la main",
    }, sensitive=[[{"type": "get_attr", "value": "password"}]])


def _dns(name: str, sub: str, target: str) -> dict:
    return _resource("ovh_domain_zone_record", name, "ovh/ovh", {
        "id": str(zlib.crc32(sub.encode())), "zone": "lab.example", "subdomain": sub,
        "fieldtype": "A", "target": target, "ttl": 300,
    })


def _state(serial: int, resources: list, outputs: dict) -> dict:
    return {
        "version": 4, "terraform_version": "1.7.5", "serial": serial, "lineage": str(uuid.uuid4()),
        "outputs": outputs, "resources": resources, "check_results": None,
    }


def _infra_state(workspace: str, serial: int, offset: int) -> dict:
    node = "pve1"
    apps = [("gitea", 200, 1024, "8G"), ("netbox", 201, 2048, "16G"), ("wordpress", 202, 1024, "8G"),
            ("mariadb", 203, 2048, "32G")]
    resources = [_lxc(f"{app}-{workspace}" if workspace != "default" else app, vmid + offset, node,
                      f"192.168.10.{vmid - 150 + offset // 10}", mem, disk)
                 for app, vmid, mem, disk in apps]
    resources.append(_resource("proxmox_vm_qemu", "pbs", "telmate/proxmox", {
        "id": f"{node}/qemu/{300 + offset}", "name": f"pbs-{workspace}", "target_node": node,
        "memory": 4096, "cores": 2, "onboot": True, "agent": 1, "clone": "debian12-cloudinit",
        "disk": [{"type": "scsi", "storage": "local-zfs", "size": "64G"}],
    }))
    outputs = {
        "gitea_ip": {"value": "192.168.10.50", "type": "string"},
        "container_ids": {"value": [vmid + offset for _, vmid, _, _ in apps], "type": ["list", "number"]},
        "root_password": {"value": "lxc-root-pw-not-real", "type": "string", "sensitive": True},
    }
    return _state(serial, resources, outputs)


def seed_tfstate(info: dict) -> dict:
    """Upload Terraform states for several projects and workspaces to the tfstate bucket.

    Keys follow the S3 backend: the default workspace at ``key``, others at
    ``<workspace_key_prefix>/<workspace>/<key>`` with the default prefix ``env:``.
    Returns {"bucket", "keys": [...], "states": {key: state dict}}; prod is uploaded
    twice so the bucket also holds an older version (serial - 1).
    """
    bucket = info["buckets"]["tfstate"]
    states = {
        "infra/terraform.tfstate": _infra_state("default", 42, 0),
        "env:/staging/infra/terraform.tfstate": _infra_state("staging", 7, 100),
        "env:/prod/infra/terraform.tfstate": _infra_state("prod", 118, 200),
        "dns/terraform.tfstate": _state(
            15, [_dns("gitea", "git", "192.168.10.50"), _dns("wiki", "wiki", "192.168.10.51"),
                 _dns("blog", "blog", "192.168.10.52"),
                 _resource("ovh_domain_zone", "lab", "ovh/ovh", mode="data", attributes={
                     "id": "lab.example", "name": "lab.example", "dnssec_supported": True,
                     "name_servers": ["dns19.ovh.net", "ns19.ovh.net"]})],
            {"zone": {"value": "lab.example", "type": "string"}}),
    }
    s3 = s3_client(info, key="tfstate_writer")  # Terraform writes the states
    for key, state in states.items():
        if key.startswith("env:/prod/"):
            older = dict(state, serial=state["serial"] - 1)
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(older, indent=2).encode(),
                          ContentType="application/json")
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(state, indent=2).encode(),
                      ContentType="application/json")
    return {"bucket": bucket, "keys": sorted(states), "states": states}
