"""Ansible Vault files: stage copies of the configured files, put them back on restore.

The files are copied as they are (encrypted); decrypting is never needed to back them up or to
restore them. A file that matches but is not encrypted is still saved, with a warning: a secret
in clear in the infrastructure repository is something the operator must hear about.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restic_orch.config import AnsibleVaultSource, Config

from ._files import fetched_beside, keep_aside
from .base import DumpOutcome, Failure, Hook, Notice, RestoreOutcome, sha256_file
from .registry import SourceKind

if TYPE_CHECKING:
    from .base import Artifact, DumpContext, Fetch, RestoreOptions

KIND = "ansible-vault"
SOURCE = "ansible_vault"
HEADER = b"$ANSIBLE_VAULT;"


def vault_header(first_line: bytes) -> dict[str, Any]:
    """{"encrypted", "vault_format", "vault_id"?} from a file's first line.

    `$ANSIBLE_VAULT;1.1;AES256` or, with a vault id, `$ANSIBLE_VAULT;1.2;AES256;<id>`.
    """
    line = first_line.rstrip(b"\r\n")
    if not line.startswith(HEADER):
        return {"encrypted": False}
    fields = line.decode("utf-8", errors="replace").split(";")
    info: dict[str, Any] = {"encrypted": True, "vault_format": ";".join(fields[1:3])}
    if len(fields) > 3 and fields[3]:
        info["vault_id"] = fields[3]
    return info


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.readline(4096)


def staged_path(out_dir: Path, original: str) -> Path:
    """Where an absolute path is staged: <out_dir>/<path without the leading slash>."""
    return out_dir / os.path.normpath(original).lstrip("/")


def restore_path(original: str, target_dir: Path | None) -> Path:
    if target_dir is None:
        return Path(original)
    return Path(target_dir) / os.path.normpath(original).lstrip("/")


class AnsibleVaultHook(Hook):
    kind = KIND
    spec = SourceKind(KIND, "vault", order=4, examples="vault, vault:<path>")

    detail_keys = ("encrypted",)

    def __init__(self, source: AnsibleVaultSource) -> None:
        self.source = source
        self.name = SOURCE

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        return cls.one_if_enabled(config.sources.ansible_vault)

    def matches(self) -> tuple[list[str], list[str], list[str]]:
        """(files, globs matching no file, relative globs) — files sorted and without duplicates."""
        found: set[str] = set()
        empty: list[str] = []
        relative: list[str] = []
        for pattern in self.source.paths:
            if not os.path.isabs(pattern):
                # relative to what? the timer's cwd is not a place to look for secrets
                relative.append(pattern)
                continue
            hits = [os.path.normpath(hit) for hit in glob.glob(pattern, recursive=True) if os.path.isfile(hit)]
            if not hits:
                empty.append(pattern)
            found.update(hits)
        return sorted(found), empty, relative

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        outcome = DumpOutcome()
        files, empty, relative = self.matches()
        for pattern in relative:
            outcome.failures.append(Failure(KIND, SOURCE, f"vault:{pattern}",
                                            f"path pattern {pattern!r} is not absolute"))
        for pattern in empty:
            outcome.notices.append(Notice(KIND, SOURCE, f"vault glob {pattern} matched no file"))
        password_file = None
        if self.source.include_password_file:
            if self.source.password_file is None:
                outcome.failures.append(Failure(KIND, SOURCE, "vault:password_file",
                                                "include_password_file is set but password_file is not"))
            else:
                password_file = os.path.normpath(os.path.abspath(self.source.password_file))
        out_dir = ctx.out_dir(KIND)
        for original in files:
            if original == password_file:
                continue  # staged below, flagged as the password file
            self._stage(ctx, outcome, out_dir, original, is_password_file=False)
        if password_file is not None and self._stage(ctx, outcome, out_dir, password_file, is_password_file=True):
            outcome.notices.append(Notice(
                KIND, SOURCE, f"the vault password file {password_file} is in the backup: the vault files are"
                " only as safe as the restic repository password (restic encrypts it)"))
        return outcome

    def _stage(self, ctx: DumpContext, outcome: DumpOutcome, out_dir: Path, original: str, *,
               is_password_file: bool) -> bool:
        component = f"vault:{original}"
        dest = staged_path(out_dir, original)
        try:
            st = os.stat(original)
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copyfile(original, dest)
            os.chmod(dest, stat.S_IMODE(st.st_mode))
            meta: dict[str, Any] = {"original_path": original, "mode": f"{stat.S_IMODE(st.st_mode):04o}",
                                    "uid": st.st_uid, "gid": st.st_gid}
            meta.update(vault_header(_first_line(dest)))
        except OSError as exc:
            outcome.failures.append(Failure(KIND, SOURCE, component, f"cannot copy {original}: {exc}"))
            return False
        if is_password_file:
            meta["is_password_file"] = True
        elif not meta["encrypted"]:
            inline = dest.read_bytes().count(b"!vault")
            detail = f" as a whole (it holds {inline} inline !vault value(s))" if inline else ""
            outcome.notices.append(Notice(KIND, SOURCE, f"vault file {original} is not encrypted{detail}:"
                                          " saved anyway; run ansible-vault encrypt on it"))
        outcome.artifacts.append(ctx.artifact(dest, component=component, kind=KIND, source=SOURCE, meta=meta))
        return True

    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        original = str(artifact.meta.get("original_path") or "")
        outcome = RestoreOutcome(component=artifact.component, ok=False, message="")
        if not os.path.isabs(original):
            outcome.message = f"artifact has no absolute original_path in its metadata ({original!r})"
            return outcome
        dest = restore_path(original, options.target_dir)
        outcome.restored_to = str(dest)
        mode = int(str(artifact.meta.get("mode") or "600"), 8)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with fetched_beside(dest, fetch, artifact.sha256) as tmp:
            if tmp is None:
                outcome.checks["sha256"] = False
                outcome.message = f"{original}: the bytes read from the snapshot do not match the recorded sha256"
                return outcome
            kept = None
            if dest.is_file() and not dest.is_symlink() and sha256_file(dest) == artifact.sha256:
                if stat.S_IMODE(dest.stat().st_mode) != mode:
                    os.chmod(dest, mode)
                outcome.ok, outcome.checks = True, {"sha256": True, "mode": f"{mode:04o}", "unchanged": True}
                outcome.message = f"{dest} is already identical, nothing to do"
                return outcome
            if dest.is_symlink() or dest.exists():
                if dest.is_dir() and not dest.is_symlink():
                    outcome.message = f"{dest} is a directory, not restoring over it"
                    return outcome
                kept = keep_aside(dest)
            os.chmod(tmp, mode)
            self._chown(tmp, artifact.meta)
            os.replace(tmp, dest)
        digest = sha256_file(dest)
        outcome.checks = {"sha256": digest == artifact.sha256,
                          "mode": f"{stat.S_IMODE(dest.stat().st_mode):04o}",
                          "mode_ok": stat.S_IMODE(dest.stat().st_mode) == mode}
        if kept is not None:
            outcome.checks["kept_previous"] = str(kept)
        outcome.ok = bool(outcome.checks["sha256"] and outcome.checks["mode_ok"])
        outcome.message = f"restored {dest}" + (f" (previous file kept as {kept})" if kept else "")
        return outcome

    @staticmethod
    def _chown(path: Path, meta: dict[str, Any]) -> None:
        # only root can give a file back to its owner; as another user the file is simply ours
        if os.geteuid() != 0 or meta.get("uid") is None:
            return
        try:
            os.chown(path, int(meta["uid"]), int(meta.get("gid", -1)))
        except OSError:
            pass


HOOK = AnsibleVaultHook
