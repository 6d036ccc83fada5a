"""scripts/restore.sh --bootstrap on a blank host: the real bundle (restic_orch.bundle.build) on the lab's S3 under
bootstrap/ of the offsite bucket, fetched with the host's key by Debian's curl (--aws-sigv4) or, with a curl older
than 7.75, by Debian's python3, then installed with `pip --no-index` into a temporary prefix.

Every run has a fresh host's PATH (Debian's /usr/bin/python3, no virtualenv, no restic-orch), pip's configuration
switched off and an unreachable index, and `curl` and `python3` wrappers first on PATH that record their argv:
the S3 secret must never be on a command line. Bad input (a wrong sum, a changed wheel, a missing escrow item, a
deleted or wrong key, no bundle, no network, another Python) stops with its message and exit code, nothing
installed and no temporary file left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import boto3
import pytest

from restic_orch import bundle
from restic_orch.lab import procs
from restic_orch.lab.s3 import empty_bucket, s3_client

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "restore.sh"
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PREFIX = "bootstrap"
# records its argv, then runs the real program
WRAPPER = '#!/bin/sh\nprintf "%s\\n" "{name} $*" >> {log}\nexec {real} "$@"\n'
# a curl before --aws-sigv4 (7.75): says its version, fails anything else
OLD_CURL = ('#!/bin/sh\nprintf "%s\\n" "curl $*" >> {log}\n'
            'if [ "$1" = --version ]; then echo "curl 7.74.0 (x86_64-pc-linux-gnu) libcurl/7.74.0"; exit 0; fi\n'
            'echo "curl: option --aws-sigv4: is unknown" >&2; exit 2\n')


def _upload(client, bucket: str, key_prefix: str, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        client.put_object(Bucket=bucket, Key=f"{key_prefix}/{rel}", Body=body)


def _bundle_files(bundle_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(bundle_dir).as_posix(): p.read_bytes() for p in sorted(bundle_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published(lab, tmp_path_factory):
    """One real bundle, built once, uploaded under bootstrap/ of the offsite bucket with lab-root's key."""
    tmp = tmp_path_factory.mktemp("bootstrap")
    info = bundle.build(tmp / "bundle", ROOT)
    s3 = lab["state"]["services"]["s3"]
    bucket = s3["buckets"]["offsite"]
    client = s3_client(s3)
    _upload(client, bucket, PREFIX, _bundle_files(tmp / "bundle"))
    yield {"tmp": tmp, "bundle": tmp / "bundle", "digest": info.digest, "s3": s3, "bucket": bucket,
           "client": client, "url": f"{s3['endpoint']}/{bucket}/{PREFIX}", "env_file": s3["env_file"],
           "secret": s3["iam"]["offsite"]["secret_key"]}
    empty_bucket(s3, bucket, prefix=f"{PREFIX}/")  # moto holds it in memory


class Host:
    """A blank host for one test: its own prefix, temporary directory and argv log."""

    def __init__(self, published: dict, tmp: Path, *, old_curl: bool = False) -> None:
        self.published = published
        self.prefix = tmp / "opt" / "restic-orch"
        self.tmpdir = tmp / "tmpdir"
        self.tmpdir.mkdir()
        self.log = tmp / "argv.log"
        self.log.touch()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        curl = OLD_CURL.format(log=self.log) if old_curl else \
            WRAPPER.format(name="curl", log=self.log, real="/usr/bin/curl")
        for name, text in (("curl", curl), ("python3", WRAPPER.format(name="python3", log=self.log,
                                                                          real="/usr/bin/python3"))):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:{FRESH_PATH}", "HOME": str(self.tmpdir), "TMPDIR": str(self.tmpdir),
                "LANG": "C.UTF-8",
                # no pip configuration can help, and an index would not answer: --no-index or fail
                "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}

    def run(self, *args: str, url: str | None = None, sha256: str | None = None, env_file: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
        published = self.published
        argv = ["bash", str(SCRIPT), "--bootstrap", url or published["url"],
                "--sha256", sha256 or published["digest"], "--s3-env-file", env_file or published["env_file"],
                "--prefix", str(self.prefix), *args]
        result = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout)
        assert published["secret"] not in self.log.read_text(), "the S3 secret was on a command line"
        assert not list(self.tmpdir.glob("restic-orch-bootstrap.*")), "the bundle's temporary copy was left"
        return result

    def fetches(self) -> list[str]:
        lines = self.log.read_text().splitlines()
        return [line for line in lines if line.startswith("curl ") and "--version" not in line]


def _refused(result: subprocess.CompletedProcess, code: int, *texts: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == code, out
    for text in texts:
        assert text in out, f"{text!r} not in:\n{out}"


def test_bootstrap_installs_with_pip_no_index_from_the_bundle(published, tmp_path):
    host = Host(published, tmp_path)
    result = host.run()
    assert result.returncode == 0, result.stdout + result.stderr
    version = json.loads((published["bundle"] / "bundle.json").read_text())["restic_orch_version"]
    assert f"installed restic-orch {version} into {host.prefix}" in result.stdout
    assert f"{host.prefix}/share/restic-orch/restore.sh --repo" in result.stdout  # the next command
    install = [line for line in result.stderr.splitlines() if "installing:" in line]
    assert install and " install " in install[0] and "--no-index" in install[0], result.stderr
    # every file over S3 with curl --aws-sigv4, the keys on stdin
    listed = (published["bundle"] / "SHA256SUMS").read_text().splitlines()
    fetches = host.fetches()
    assert len(fetches) == len(listed) + 1 and all("--aws-sigv4" in f and "-K -" in f for f in fetches), fetches

    cli = host.prefix / "bin" / "restic-orch"
    ran = subprocess.run([str(cli), "--version"], env=host.env(), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and version in ran.stdout, ran.stdout + ran.stderr
    assert "home = /usr/bin" in (host.prefix / "pyvenv.cfg").read_text()  # Debian's python3, not the project's
    share = host.prefix / "share" / "restic-orch"
    for name in ("restore.sh", "disaster-recovery.md", "SHA256SUMS", "bundle.json"):
        assert (share / name).read_bytes() == (published["bundle"] / name).read_bytes(), name
    assert os.access(share / "restore.sh", os.X_OK)
    # the installed restore.sh uses its own prefix's CLI: click parses the restore options
    again = subprocess.run([str(share / "restore.sh"), "--repo", "s3:http://127.0.0.1:9/x", "--password-file",
                            str(tmp_path / "absent")], env=host.env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--password-file" in again.stderr and "does not exist" in again.stderr, \
        again.stdout + again.stderr


def test_python_fetches_when_curl_is_old_then_the_restore_goes_on(published, tmp_path):
    host = Host(published, tmp_path, old_curl=True)
    assert shutil.which("restic-orch", path=FRESH_PATH) is None  # only the fresh install can run below
    result = host.run("--repo", "s3:http://127.0.0.1:9/x", "--password-file", str(tmp_path / "absent"))
    _refused(result, 2, "older than 7.75", "fetching with python3", "installed restic-orch",
             # the freshly installed CLI parsed the restore options: the restore went on
             "Usage: restic-orch restore", "does not exist")
    assert not host.fetches()  # the old curl fetched nothing
    python_fetches = [line for line in host.log.read_text().splitlines() if line.startswith("python3 - http")]
    assert len(python_fetches) == len((published["bundle"] / "SHA256SUMS").read_text().splitlines()) + 1
    assert all(published["env_file"] in line for line in python_fetches)  # the file's path, not its secret
    assert (host.prefix / "bin" / "restic-orch").exists()


def test_a_wrong_sha256_stops_after_the_first_file(published, tmp_path):
    host = Host(published, tmp_path)
    wrong = "0" * 64
    _refused(host.run(sha256=wrong), 1,
             f"the bundle's SHA256SUMS has sha256 {published['digest']} but the escrow sheet says {wrong}",
             "runbook 1, step 6 ('bundle sums')")
    assert len(host.fetches()) == 1
    assert not host.prefix.exists()


def test_a_changed_wheel_byte_is_named_and_nothing_installed(published, tmp_path):
    host = Host(published, tmp_path)
    wheel = min((published["bundle"] / "wheels").glob("*.whl"), key=lambda p: p.stat().st_size)
    key = f"{PREFIX}/wheels/{wheel.name}"
    body = bytearray(wheel.read_bytes())
    body[len(body) // 2] ^= 0xFF
    published["client"].put_object(Bucket=published["bucket"], Key=key, Body=bytes(body))
    try:
        result = host.run()
    finally:
        published["client"].put_object(Bucket=published["bucket"], Key=key, Body=wheel.read_bytes())
    _refused(result, 1, f"the bundle's wheels/{wheel.name} does not match SHA256SUMS", "nothing was installed",
             "runbook 1, step 6")
    assert not host.prefix.exists()


def test_missing_escrow_items_are_each_named(published, tmp_path):
    host = Host(published, tmp_path)
    absent = tmp_path / "s3.env"
    _refused(host.run(url="ftp://nowhere", sha256="abc", env_file=str(absent)), 2,
             f"escrow item missing: {absent} (the offsite S3 keys, escrow sheet 'Secrets'; runbook 1, step 4)",
             "escrow item wrong: --sha256 'abc' is not 64 hex digits", "BUNDLE_SHA256 in /root/escrow.env",
             "escrow item wrong: --bootstrap 'ftp://nowhere'", "BUNDLE_URL in /root/escrow.env")
    absent.write_text(f"AWS_ACCESS_KEY_ID={published['s3']['iam']['offsite']['access_key']}\n")
    absent.chmod(0o644)
    _refused(host.run(env_file=str(absent)), 2, f"escrow item incomplete: {absent} has no AWS_SECRET_ACCESS_KEY",
             f"warning: {absent} is mode 644")
    assert not host.fetches() and not host.prefix.exists()


def _deleted_key(s3: dict) -> tuple[str, str]:
    """An access key of the host's IAM user, made then deleted: what S3 says of a revoked key.

    The lab's keys may not call IAM (lab-root has s3:* only): moto's auth is off for exactly these two calls,
    then on again (moto ignores UpdateAccessKey's Inactive, so the key is deleted rather than disabled)."""
    def reset_auth(free_calls: int) -> None:
        request = urllib.request.Request(f"{s3['endpoint']}/moto-api/reset-auth", data=str(free_calls).encode(),
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    iam = boto3.client("iam", endpoint_url=s3["endpoint"], region_name=s3["region"], aws_access_key_id="setup",
                       aws_secret_access_key="setup")  # noqa: S106 - not checked while auth is off
    user = s3["iam"]["offsite"]["user"]
    reset_auth(2)
    try:
        key = iam.create_access_key(UserName=user)["AccessKey"]
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    finally:
        reset_auth(0)
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_a_revoked_or_wrong_key_is_refused_by_s3(published, tmp_path):
    host = Host(published, tmp_path)
    key_id, secret = _deleted_key(published["s3"])
    revoked = tmp_path / "revoked.env"
    revoked.write_text(f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n")
    revoked.chmod(0o600)
    _refused(host.run(env_file=str(revoked)), 1,
             f"S3 refused the offsite key in {revoked} (InvalidAccessKeyId) fetching {published['url']}/SHA256SUMS",
             "the key is wrong, disabled or expired; runbook scenario 7 (restic password or S3 keys lost)")
    assert secret not in host.log.read_text()
    wrong = tmp_path / "wrong.env"
    wrong.write_text(f"AWS_ACCESS_KEY_ID={published['s3']['iam']['offsite']['access_key']}\n"
                     "AWS_SECRET_ACCESS_KEY=not-the-secret-at-all\n")
    wrong.chmod(0o600)
    _refused(host.run(env_file=str(wrong)), 1, f"S3 refused the offsite key in {wrong} (SignatureDoesNotMatch)")
    assert not host.prefix.exists()


def test_no_bundle_or_no_endpoint_is_said(published, tmp_path):
    host = Host(published, tmp_path)
    nothing = f"{published['url']}/not-published"
    _refused(host.run(url=nothing), 1, f"no bootstrap bundle at {nothing} (was it published?",
             "`restic-orch bundle publish` on the old host; otherwise runbook 1, way B")
    closed = f"http://127.0.0.1:{procs.free_port()}"
    _refused(host.run(url=f"{closed}/offsite/{PREFIX}"), 1, f"cannot reach the S3 endpoint {closed}")
    assert not host.prefix.exists()


def test_another_python_or_an_unknown_prefix_is_refused(published, tmp_path):
    host = Host(published, tmp_path)
    host.prefix.mkdir(parents=True)
    (host.prefix / "keep").write_text("someone else's\n")
    _refused(host.run(), 2, f"{host.prefix} exists and is not an earlier restic-orch install: not touching it")
    assert not host.fetches() and [p.name for p in host.prefix.iterdir()] == ["keep"]
    shutil.rmtree(host.prefix)

    # a bundle made for another Python: its own SHA256SUMS, under bootstrap/ where the host's key may read
    other = tmp_path / "other"
    other.mkdir()
    meta = json.loads((published["bundle"] / "bundle.json").read_text()) | {"python": "3.99"}
    (other / "bundle.json").write_text(json.dumps(meta))
    for name in ("constraints.txt", "restore.sh"):
        shutil.copy(published["bundle"] / name, other / name)
    (other / "SHA256SUMS").write_text(bundle.sums_text(other))
    _upload(published["client"], published["bucket"], f"{PREFIX}/py399", _bundle_files(other))
    _refused(host.run(url=f"{published['url']}/py399", sha256=bundle.file_sha256(other / "SHA256SUMS")), 2,
             "the bundle's wheels are for Python 3.99 but python3 here is 3.11")
    assert not host.prefix.exists()
