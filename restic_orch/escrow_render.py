"""The escrow sheet on paper: Markdown and a self-contained printable HTML page from one list of blocks, and the
command's human output. Only what escrow.make_sheet collected is rendered; a secret's value only when it holds one.
"""

from __future__ import annotations

import html
import shlex
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .escrow import Sheet

NOT_PUBLISHED = "NOT PUBLISHED: run `restic-orch bundle build && restic-orch bundle publish`, then make the sheet again"

Block = tuple[str, Any]  # ("h1"|"h2"|"h3"|"p"|"code", text) or ("table", (headers, rows))


def _repo_blocks(sheet: Sheet) -> list[Block]:
    blocks: list[Block] = [("h2", "Repositories"), ("p", f"restic on this host: {sheet.restic_version}")]
    for repo in sheet.repositories:
        rows = [["address", repo.url]]
        if repo.url.startswith("/"):
            rows.append(["kind", "a directory on this host: gone with it when the host is lost"])
        if repo.s3:
            rows += [["endpoint", repo.s3.endpoint], ["region", repo.region], ["bucket", repo.s3.bucket],
                     ["prefix", repo.s3.prefix or "(bucket root)"]]
        if repo.rights:
            rows.append(["S3 key", repo.rights])
        rows.append(["repository ID", repo.id or f"could not be read: {repo.error}"])
        rows.append(["repository version", str(repo.version) if repo.version else "unknown"])
        blocks += [("h3", repo.name), ("table", (["", ""], rows))]
    return blocks + _bundle_blocks(sheet)


def _bundle_blocks(sheet: Sheet) -> list[Block]:
    """Where restic-orch itself comes from on a new host, and the escrow.env that says so to the commands."""
    blocks: list[Block] = [("h2", "restic-orch itself: the bootstrap bundle")]
    bundle = sheet.bundle
    if bundle:
        rows = [["URL", bundle["url"]], ["sha256 of SHA256SUMS", bundle["digest"]],
                ["restic-orch", str(bundle.get("version", ""))], ["region", str(bundle.get("region", ""))],
                ["published", str(bundle.get("published", ""))]]
        blocks += [("p", "restic-orch's wheel and its pinned dependencies, restore.sh and the runbook, beside the"
                         " offsite repository: the first commands below fetch it with the S3 keys and check it"
                         " against this sha256."), ("table", (["", ""], rows))]
    else:
        blocks.append(("p", f"Bootstrap bundle: {NOT_PUBLISHED}."))
    blocks += [("h3", "escrow.env (copy it to /root/escrow.env on the new host; it holds no secret)"),
               ("code", sheet.escrow_env.rstrip("\n"))]
    return blocks


def _secret_blocks(sheet: Sheet) -> list[Block]:
    rows = []
    for s in sheet.secrets:
        what = s.what + (f" (variables: {', '.join(s.keys)})" if s.keys else "")
        rows.append([s.location, what, s.path, s.status, s.new_host or "-", s.needed_for])
    manual = [
        ["PVE root access", "root password of the Proxmox host and its web UI: a new host's API token is made"
                            " with it (runbook 1, step 2)"],
        ["Ansible Vault password", "decrypts the vault files and the redeploy; kept by the operator, not by"
                                   " restic-orch (if the configuration names a vault password file, it is above)"],
    ]
    if any(r.rights.startswith("append-only") for r in sheet.repositories):
        manual.append(["S3 key that may delete (offsite admin key)", "retention and repairs from the trusted"
                       " machine (docs/security.md); never on this host; not needed to restore"])
    blocks: list[Block] = [
        ("h2", "Secrets to keep beside this sheet"),
        ("p", "Each is read from the configuration; 'on the new host' is the file the commands below expect."),
        ("table", (["config field", "what", "on this host today", "state", "on the new host", "needed for"], rows)),
        ("h3", "Kept by hand (not in the configuration)"),
        ("table", (["item", "why", "kept at"], [[*m, "______________________"] for m in manual])),
    ]
    if sheet.with_secrets:
        blocks.append(("h2", "Secret values"))
        for s in sheet.secrets:
            blocks += [("h3", f"{s.location}: {s.path}"), ("code", s.value if s.value is not None else s.status)]
    return blocks


def blocks_of(sheet: Sheet) -> list[Block]:
    values = ("THIS PAGE HOLDS SECRET VALUES: the keys to every backup. Print it, keep the paper copy offline,"
              " delete the file." if sheet.with_secrets else
              "No secret value is on this page: keep it beside the secrets it lists.")
    blocks: list[Block] = [
        ("h1", f"restic-orch escrow sheet: {sheet.host}"),
        ("p", f"Made {sheet.made:%Y-%m-%d %H:%M} UTC by restic-orch {__version__} from {sheet.config_path}. {values}"),
    ]
    blocks += [("p", f"INCOMPLETE: {p}") for p in sheet.problems]
    blocks += _repo_blocks(sheet) + _secret_blocks(sheet)
    blocks += [("h2", "First commands on a new host (docs/runbooks/disaster-recovery.md, scenario 1)"),
               ("p", "Write each secret of the list into its 'on the new host' file and escrow.env into"
                     " /root/escrow.env first."),
               ("code", sheet.commands),
               ("p", "`restic-orch check` warns when this sheet is out of date (a repository moved or re-created,"
                     " a secret file changed, a newer bootstrap bundle published): make a new one then.")]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + body)
        elif kind == "table":
            headers, rows = body
            out.append("\n".join(["| " + " | ".join(_md_cell(c) for c in line) + " |"
                                  for line in [headers, ["---"] * len(headers), *rows]]))
        elif kind == "code":
            fence = "~~~~" if "```" in body else "```"
            out.append(f"{fence}\n{body}\n{fence}")
        else:
            out.append(body)
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:sans-serif;max-width:60em;margin:1em auto;font-size:11pt}
table{border-collapse:collapse;width:100%;margin:.5em 0}td,th{border:1px solid #888;padding:.2em .4em;
text-align:left;vertical-align:top;overflow-wrap:anywhere}pre{border:1px solid #888;padding:.5em;white-space:pre-wrap;
overflow-wrap:anywhere}h2{border-bottom:2px solid #000;page-break-after:avoid}
@media print{body{margin:0;max-width:none}h2,h3{page-break-after:avoid}table,pre{page-break-inside:avoid}}"""


def render_html(blocks: list[Block]) -> str:
    esc = html.escape
    out = []
    for kind, body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{esc(body)}</{kind}>")
        elif kind == "table":
            headers, rows = body
            head = "" if not any(headers) else "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
            cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
            out.append(f"<table>{head}{cells}</table>")
        elif kind == "code":
            out.append(f"<pre>{esc(body)}</pre>")
        else:
            out.append(f"<p>{esc(body)}</p>")
    title = esc(blocks[0][1]) if blocks else "escrow sheet"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def human(record: dict[str, Any]) -> str:
    files = [str(f) for f in record["sheets"]]
    if record["with_secrets"]:
        lines = ["escrow sheet written WITH SECRET VALUES (files created 0600): print it, keep the paper copy"
                 " offline, then delete the files:", f"  shred -u {' '.join(map(shlex.quote, files))}"]
    else:
        lines = ["escrow sheet written (no secret values): print it and keep it offline beside the secrets it lists:",
                 *(f"  {f}" for f in files)]
    for name, repo in record["repositories"].items():
        lines.append(f"{name}: ID {repo['id']} (repository version {repo['repository_version']})" if repo["id"]
                     else f"{name}: ID could not be read: {repo['id_error']}")
    missing = [s["path"] for s in record["secrets"] if s["status"] == "MISSING"]
    lines.append(f"secrets: {len(record['secrets'])} listed" + (f", MISSING: {', '.join(missing)}" if missing else ""))
    lines.append(f"restic: {record['restic_version']}")
    bundle = record.get("bootstrap_bundle")
    lines.append(f"bootstrap bundle: {bundle['digest']} at {bundle['url']}" if bundle
                 else "bootstrap bundle: not published (restic-orch bundle build && restic-orch bundle publish)")
    if record.get("escrow_env"):
        lines.append(f"for /root/escrow.env on the new host: {record['escrow_env']}")
    if record["problems"]:
        lines.append(f"the sheet is INCOMPLETE ({len(record['problems'])} problem(s), marked on it): exit 3")
    return "\n".join(lines)
