"""An S3 endpoint (moto server) for the simulated homelab: Terraform state + restic offsite.

moto accepts any signature until told otherwise, which would hide credential bugs. So we
set up the IAM user, its key, its policy and the buckets while auth is off, then switch
signature checking on (``/moto-api/reset-auth`` with 0 free calls): from then on only
the lab's access key with its real secret gets in, a wrong secret is refused.

moto keeps everything in memory: lab data sent here must stay small.
"""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
import zlib
from pathlib import Path

from restic_orch.lab import procs
from restic_orch.lab.secrets import secrets_dir, write_secret

REGION = "us-east-1"
BUCKETS = {"tfstate": "tfstate", "offsite": "offsite"}
IAM_USER = "restic-orch"
_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}],
}


def _client(service: str, endpoint: str, access_key: str, secret_key: str):  # noqa: ANN202 - boto3 client
    import boto3  # lab-only dependency: import lazily
    from botocore.config import Config

    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def s3_client(info: dict, secret_key: str | None = None):  # noqa: ANN201 - boto3 client
    """A boto3 S3 client for the lab endpoint with the lab's key (or another secret)."""
    return _client("s3", info["endpoint"], info["access_key"], secret_key or info["secret_key"])


def start_s3(base_dir: Path, port: int | None = None) -> dict:
    """Start moto, create the IAM user/key and buckets, enforce signatures; return its info.

    Writes ``base_dir/secrets/s3.env`` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_DEFAULT_REGION), the env-file format the product reads.
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
                  "region": REGION, "buckets": dict(BUCKETS), "log": str(log_path)}
    try:
        procs.wait_ready(procs.tcp_ready("127.0.0.1", port), pid=pid, log_path=log_path,
                         timeout=30, what="moto server")
        # Auth is still off: any credentials do for the setup calls.
        iam = _client("iam", endpoint, "setup", "setup")
        iam.create_user(UserName=IAM_USER)
        iam.put_user_policy(UserName=IAM_USER, PolicyName="lab-s3", PolicyDocument=json.dumps(_POLICY))
        key = iam.create_access_key(UserName=IAM_USER)["AccessKey"]
        info["access_key"], info["secret_key"] = key["AccessKeyId"], key["SecretAccessKey"]
        s3 = _client("s3", endpoint, "setup", "setup")
        for bucket in BUCKETS.values():
            s3.create_bucket(Bucket=bucket)
        # Terraform's docs recommend versioning on the state bucket: do as a real setup.
        s3.put_bucket_versioning(Bucket=BUCKETS["tfstate"], VersioningConfiguration={"Status": "Enabled"})
        # text/plain: with urllib's default form content type, werkzeug eats the body.
        request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 endpoint
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
            headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()
    except Exception:
        stop_s3(info)
        raise
    env_file = write_secret(
        secrets_dir(base_dir) / "s3.env",
        f"AWS_ACCESS_KEY_ID={info['access_key']}\nAWS_SECRET_ACCESS_KEY={info['secret_key']}\n"
        f"AWS_DEFAULT_REGION={REGION}\n",
    )
    info["env_file"] = str(env_file)
    return info


def stop_s3(info: dict) -> None:
    """Stop moto (its data, in memory, is gone with it)."""
    procs.stop_pid(int(info["pid"]), timeout=10, match="moto")


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
    s3 = s3_client(info)
    for key, state in states.items():
        if key.startswith("env:/prod/"):
            older = dict(state, serial=state["serial"] - 1)
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(older, indent=2).encode(),
                          ContentType="application/json")
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(state, indent=2).encode(),
                      ContentType="application/json")
    return {"bucket": bucket, "keys": sorted(states), "states": states}
