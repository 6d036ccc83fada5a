"""The escrow sheet without a lab: restic's S3 address forms, what the sheet lists and says, its files' modes, the
record `check` compares with, and that no secret value leaves without --with-secrets (restic itself is faked)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from restic_orch import bundle, escrow, escrow_render, masking, restic
from restic_orch.cli import main
from restic_orch.config import Repository, load_config
from tests.configs import host_dirs

OFFSITE_URL = "s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic"
LOCAL_ID, OFFSITE_ID = "a1" * 32, "b2" * 32
BUNDLE_URL, BUNDLE_DIGEST = "https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/bootstrap", "c3" * 32


@pytest.mark.parametrize(("url", "expected"), [
    (OFFSITE_URL, ("https://s3.gra.io.cloud.ovh.net", "infra-oldevops-backups", "restic")),
    ("s3:http://127.0.0.1:9000/bucket", ("http://127.0.0.1:9000", "bucket", "")),
    ("s3:http://127.0.0.1:9000/bucket/", ("http://127.0.0.1:9000", "bucket", "")),
    ("s3:s3.amazonaws.com/bucket/a/b/", ("https://s3.amazonaws.com", "bucket", "a/b")),
    ("s3://minio.lan:9000/bucket/x//y", ("https://minio.lan:9000", "bucket", "x/y")),
])
def test_s3_addresses_are_read_as_restic_reads_them(url: str, expected: tuple[str, str, str]) -> None:
    assert escrow.parse_s3_url(url) == escrow.S3Address(*expected)


def test_other_backends_have_no_s3_address_and_a_bucket_is_required() -> None:
    assert escrow.parse_s3_url("/var/backups/infra-oldevops/restic") is None
    assert escrow.parse_s3_url("sftp:backup@host:/srv/restic") is None
    with pytest.raises(ValueError, match="bucket"):
        escrow.parse_s3_url("s3:https://s3.example.net")


def test_region_and_key_rights_come_from_the_configuration(tmp_path: Path) -> None:
    env = tmp_path / "s3.env"
    env.write_text("AWS_ACCESS_KEY_ID=AKIAX\nexport AWS_SECRET_ACCESS_KEY=zzz\n# AWS_REGION=no\n"
                   "AWS_DEFAULT_REGION=gra\n")
    repo = Repository(url=OFFSITE_URL, password_file=tmp_path / "pw", env_file=env, retention=None)
    assert escrow.env_keys(env) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]
    # the region's value sits in a secret file: the sheet says where, not what
    assert escrow.region_of(repo) == f"AWS_DEFAULT_REGION in the S3 keys file {env}"
    assert escrow.key_rights(repo).startswith("append-only")
    deleting = repo.model_copy(update={"options": {"s3.region": "gra"}, "retention": {"keep_within_daily": "30d"}})
    assert escrow.region_of(deleting) == "gra" and escrow.key_rights(deleting).startswith("may delete")
    assert escrow.region_of(repo.model_copy(update={"env_file": None})) == "not set (restic asks the endpoint)"


def test_markdown_and_html_escape_what_they_hold() -> None:
    blocks: list[escrow_render.Block] = [("h1", "a <b> & c"), ("table", (["k", "v"], [["x|y", "1\n2"]])),
                                  ("code", "```\n<script>")]
    md = escrow_render.render_markdown(blocks)
    assert "| x\\|y | 1<br>2 |" in md and "~~~~\n```\n<script>\n~~~~" in md
    page = escrow_render.render_html(blocks)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<title>a &lt;b&gt; &amp; c</title>" in page


def test_a_file_is_created_with_its_mode_even_over_an_older_one(tmp_path: Path) -> None:
    path = tmp_path / "sheet.md"
    path.write_text("old")
    path.chmod(0o644)
    escrow.write_file(path, "new", 0o600)
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.md"]


# ---------------------------------------------------------------- the command on a configuration
@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    # reading secret files registers them for masking, process-wide: keep these values to this module
    monkeypatch.setattr(masking, "_secrets", set())


SECRETS = {"restic-local.pass": "local-password-1234\n", "restic-offsite.pass": "offsite-password-5678\n",
           "offsite-s3.env": "AWS_ACCESS_KEY_ID=AKIAESCROWTEST\nAWS_SECRET_ACCESS_KEY=s3-secret<&>9\n"
                             "AWS_DEFAULT_REGION=region-in-file\n",
           "pve-token": "pve-token-value-0000\n", "postgres-pg.pass": "pg-password-4321\n",
           "terraform-state.env": "AWS_ACCESS_KEY_ID=AKIATFSTATE\nAWS_SECRET_ACCESS_KEY=tf-secret-777\n"}


def secret_values() -> list[str]:
    values = []
    for text in SECRETS.values():
        values += [line.partition("=")[2] or line for line in text.splitlines()]
    return values


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    for name, text in SECRETS.items():
        (secrets / name).write_text(text)
        (secrets / name).chmod(0o600)
    path = tmp_path / "config.yml"
    path.write_text(host_dirs(tmp_path) + f"""\
repositories:
  local:
    url: {tmp_path}/repo
    password_file: {secrets}/restic-local.pass
    retention: {{keep_within_daily: 7d}}
  offsite:
    url: {OFFSITE_URL}
    password_file: {secrets}/restic-offsite.pass
    env_file: {secrets}/offsite-s3.env
    options: {{s3.bucket-lookup: path}}
    retention: null
sources:
  proxmox: {{host: 10.0.0.2, user: backup@pve, token_name: restic-orch, token_file: {secrets}/pve-token}}
  postgres:
    - {{name: main, password_file: {secrets}/postgres-pg.pass}}
  terraform_state: {{bucket: tfstate, env_file: {secrets}/terraform-state.env}}
""")
    # what `restic-orch bundle publish` records (tests/e2e/test_bundle_publish.py publishes for real)
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / bundle.RECORD).write_text(json.dumps(
        {"digest": BUNDLE_DIGEST, "url": BUNDLE_URL, "region": "gra", "published": "2026-12-01T03:00:00+00:00",
         "version": "0.1.0"}))
    return path


@pytest.fixture
def fake_restic(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | Exception]:
    """What `restic cat config` answers per repository name: an ID, or the error it raises."""
    answers: dict[str, str | Exception] = {"local": LOCAL_ID, "offsite": OFFSITE_ID}

    def repo_config(self: restic.Repo) -> restic.RepoConfig:
        answer = answers[self.name]
        if isinstance(answer, Exception):
            raise answer
        return restic.RepoConfig(answer, 2)

    monkeypatch.setattr(restic.Repo, "repo_config", repo_config)
    monkeypatch.setattr(restic, "version", lambda binary="restic": restic.ResticVersion(0, 14, 0))
    return answers


def run(config_file: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config_file), *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_sheet_lists_addresses_ids_secrets_and_the_first_commands(config_file: Path, fake_restic: dict,
                                                                       tmp_path: Path) -> None:
    code, stdout, stderr = run(config_file, "--json", "escrow", "--out", str(tmp_path / "out"))
    assert code == 0, stdout + stderr
    record = json.loads(stdout)
    offsite = record["repositories"]["offsite"]
    assert (offsite["endpoint"], offsite["bucket"], offsite["prefix"], offsite["id"]) == (
        "https://s3.gra.io.cloud.ovh.net", "infra-oldevops-backups", "restic", OFFSITE_ID)
    assert record["repositories"]["local"]["id"] == LOCAL_ID and record["restic_version"] == "0.14.0"
    config = load_config(config_file)
    where = {s["location"]: s["path"] for s in record["secrets"]}
    assert where == {
        "repositories.local.password_file": str(config.repositories.local.password_file),
        "repositories.offsite.password_file": str(config.repositories.offsite.password_file),
        "repositories.offsite.env_file": str(config.repositories.offsite.env_file),
        "sources.proxmox.token_file": str(tmp_path / "secrets/pve-token"),
        "sources.postgres[0].password_file": str(tmp_path / "secrets/postgres-pg.pass"),
        "sources.terraform_state.env_file": str(tmp_path / "secrets/terraform-state.env"),
        # the restore keys the host does not hold by design: kept by hand, named for --secrets-dir
        "sources.postgres[0].restore_password_file": "(not on the host, by design)",
        "sources.terraform_state.restore_env_file": "(not on the host, by design)",
    }
    kept = {s["location"]: (s["status"], s["new_host"]) for s in record["secrets"] if s["status"] == "kept by hand"}
    assert kept["sources.terraform_state.restore_env_file"] == (
        "kept by hand", "/root/sources-terraform_state-restore_env_file")
    assert not [p for p in record["problems"] if "restore_env_file" in p or "restore_password_file" in p]
    md = (tmp_path / "out" / Path(record["sheets"][0]).name).read_text()
    assert record["sheets"][0].endswith(".md") and record["sheets"][1].endswith(".html")
    for text in (OFFSITE_ID, LOCAL_ID, BUNDLE_URL, BUNDLE_DIGEST, "PVE root access",
                 "Ansible Vault password", "append-only", "AWS_SECRET_ACCESS_KEY", *where.values()):
        assert text in md, text
    assert record["bootstrap_bundle"]["digest"] == BUNDLE_DIGEST
    # the runbook's commands: the bundle fetched and checked, then restore with the configured address and the
    # runbook's file names
    assert ('bash restore.sh --bootstrap "$BUNDLE_URL" --sha256 "$BUNDLE_SHA256" --region "$S3_REGION"'
            " --s3-env-file /root/s3.env") in md
    assert (f"/opt/restic-orch/share/restic-orch/restore.sh --repo {OFFSITE_URL} \\\n"
            "    --password-file /root/restic-password --s3-env-file /root/s3.env \\\n    --secrets-dir /root") in md
    assert "--set" not in md and "--install" not in md and "git clone" not in md
    # escrow.env beside the sheets, on the sheet too: no secret, shell-quoted
    env = Path(record["escrow_env"])
    assert env.read_text() == (f"HOST=pve1\nRESTIC_REPOSITORY={OFFSITE_URL}\nBUNDLE_URL={BUNDLE_URL}\n"
                               f"BUNDLE_SHA256={BUNDLE_DIGEST}\nS3_REGION=gra\n")
    assert env.read_text().strip() in md
    for path in [*record["sheets"], env]:
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o640


def test_no_secret_value_leaves_without_with_secrets(config_file: Path, fake_restic: dict, tmp_path: Path) -> None:
    outputs = [run(config_file, "escrow", "--out", str(tmp_path / "out")),
               run(config_file, "--json", "escrow", "--out", str(tmp_path / "out"))]
    texts = [text for _, stdout, stderr in outputs for text in (stdout, stderr)]
    texts += [p.read_text() for p in (tmp_path / "out").iterdir()]
    texts += [(tmp_path / "state" / escrow.RECORD).read_text()]
    texts += [p.read_text() for p in (tmp_path / "log").iterdir()]
    for value in secret_values():
        assert not any(value in text for text in texts), value


def test_with_secrets_the_values_are_on_0600_files_only(config_file: Path, fake_restic: dict, tmp_path: Path) -> None:
    code, stdout, stderr = run(config_file, "escrow", "--out", str(tmp_path / "out"), "--with-secrets")
    assert code == 0, stdout + stderr
    assert "WITH SECRET VALUES" in stdout and "0600" in stdout
    md, page = next((tmp_path / "out").glob("*.md")), next((tmp_path / "out").glob("*.html"))
    assert md.name.endswith("-with-secrets.md") and page.name.endswith("-with-secrets.html")
    for path in (md, page):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for value in secret_values():
        assert value in md.read_text(), value
    assert "s3-secret&lt;&amp;&gt;9" in page.read_text()
    for text in (stdout, stderr, (tmp_path / "state" / escrow.RECORD).read_text()):
        assert not any(value in text for value in secret_values())


def test_what_cannot_be_read_is_marked_and_the_exit_is_partial(config_file: Path, fake_restic: dict,
                                                                tmp_path: Path) -> None:
    fake_restic["offsite"] = restic.RepoUnreachable("dial tcp: connection refused", repo="offsite")
    (tmp_path / "secrets" / "postgres-pg.pass").unlink()
    code, stdout, _ = run(config_file, "escrow", "--out", str(tmp_path / "out"))
    assert code == 3
    assert "offsite: ID could not be read: offsite: dial tcp: connection refused" in stdout
    assert f"MISSING: {tmp_path}/secrets/postgres-pg.pass" in stdout
    md = next((tmp_path / "out").glob("*.md")).read_text()
    assert "| repository ID | could not be read: offsite: dial tcp: connection refused |" in md
    assert f"| sources.postgres[0].password_file | postgres main: password | {tmp_path}/secrets/postgres-pg.pass" \
           " | MISSING |" in md
    assert LOCAL_ID in md


def test_without_a_published_bundle_the_sheet_says_so_and_exits_3(config_file: Path, fake_restic: dict,
                                                                   tmp_path: Path) -> None:
    (tmp_path / "state" / bundle.RECORD).unlink()
    code, stdout, _ = run(config_file, "escrow", "--out", str(tmp_path / "out"))
    assert code == 3 and "bootstrap bundle: not published" in stdout
    md = next((tmp_path / "out").glob("*.md")).read_text()
    assert f"INCOMPLETE: {escrow.BUNDLE_MISSING}" in md
    assert "BUNDLE_URL=''\nBUNDLE_SHA256=''" in (tmp_path / "out" / escrow.ESCROW_ENV).read_text()


def test_the_record_tells_check_what_changed(config_file: Path, fake_restic: dict, tmp_path: Path) -> None:
    config = load_config(config_file)
    assert escrow.stale_warnings(config, {})[0].startswith("no escrow sheet on record")
    assert run(config_file, "escrow", "--out", str(tmp_path / "out"))[0] == 0
    ids = {"local": LOCAL_ID, "offsite": OFFSITE_ID}
    assert escrow.stale_warnings(config, ids) == []
    assert escrow.stale_warnings(config, {"local": LOCAL_ID}) == []  # an ID not read is not a change
    (tmp_path / "secrets" / "pve-token").write_text("a-new-token-value\n")
    moved = config.model_copy(deep=True)
    moved.repositories.local.url = str(tmp_path / "elsewhere")
    warnings = escrow.stale_warnings(moved, {**ids, "offsite": "c3" * 32})
    assert len(warnings) == 3 and all(w.startswith("escrow sheet of ") for w in warnings)
    joined = "\n".join(warnings)
    assert "repository local moved to" in joined and "repository offsite has ID c3c3c3c3, the sheet b2b2b2b2" in joined
    assert f"secret sources.proxmox.token_file ({tmp_path}/secrets/pve-token) changed" in joined
    # a bundle published after the sheet: the sheet names an older one
    (tmp_path / "state" / bundle.RECORD).write_text(json.dumps({"digest": "d4" * 32, "url": BUNDLE_URL}))
    newer = escrow.stale_warnings(config, ids)
    assert len(newer) == 2 and "it names bootstrap bundle c3c3c3c3c3c3, d4d4d4d4d4d4 is published" in newer[1]


def test_restic_cat_config_is_read_into_id_and_version() -> None:
    text = '{"version": 2, "id": "' + LOCAL_ID + '", "chunker_polynomial": "2c255777522431"}'
    assert restic.parse_repo_config(text) == restic.RepoConfig(LOCAL_ID, 2)
    with pytest.raises(restic.ResticError, match="repository config"):
        restic.parse_repo_config("Fatal: no")
