"""A `pveum` stand-in: the subcommands the docs use, run as root@pam through the fake's own access API.

Like pve-access-control's PVE/CLI/pveum.pm, each subcommand is the API method behind it called in
process with root@pam's rights (the real CLI does not go through pveproxy either). The lab provisions
its API token by running the `pveum` lines of docs/getting-started.md verbatim, so the documented
commands and the lab cannot drift apart.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from . import access, layout
from .app import Ctx, build_router
from .errors import ApiError

DOCS = Path(__file__).resolve().parents[3] / "docs" / "getting-started.md"

# (subcommand words, HTTP method, path template, positional parameter names, fixed parameters)
COMMANDS: tuple[tuple[tuple[str, ...], str, str, tuple[str, ...], dict[str, str]], ...] = (
    (("user", "add"), "POST", "/access/users", ("userid",), {}),
    (("useradd",), "POST", "/access/users", ("userid",), {}),
    (("user", "list"), "GET", "/access/users", (), {}),
    (("user", "token", "add"), "POST", "/access/users/{userid}/token/{tokenid}", ("userid", "tokenid"), {}),
    (("user", "token", "permissions"), "GET", "/access/permissions", ("userid", "tokenid"), {}),
    (("user", "permissions"), "GET", "/access/permissions", ("userid",), {}),
    (("role", "add"), "POST", "/access/roles", ("roleid",), {}),
    (("roleadd",), "POST", "/access/roles", ("roleid",), {}),
    (("role", "modify"), "PUT", "/access/roles/{roleid}", ("roleid",), {}),
    (("role", "list"), "GET", "/access/roles", (), {}),
    (("acl", "modify"), "PUT", "/access/acl", ("path",), {}),
    (("aclmod",), "PUT", "/access/acl", ("path",), {}),
    (("acl", "delete"), "PUT", "/access/acl", ("path",), {"delete": "1"}),
    (("acldel",), "PUT", "/access/acl", ("path",), {"delete": "1"}),
    (("acl", "list"), "GET", "/access/acl", (), {}),
)


class PveumError(Exception):
    pass


def parse(argv: list[str]) -> tuple[str, str, dict[str, str], tuple[str, ...]]:
    """(method, path, params, words) for one pveum command line (without the leading 'pveum')."""
    for words, method, template, positional, fixed in sorted(COMMANDS, key=lambda c: -len(c[0])):
        if tuple(argv[: len(words)]) != words:
            continue
        rest = argv[len(words):]
        params: dict[str, str] = dict(fixed)
        args: list[str] = []
        i = 0
        while i < len(rest):
            arg = rest[i]
            if arg.startswith("-") and len(arg) > 1:
                name = arg.lstrip("-")
                if "=" in name:
                    name, value = name.split("=", 1)
                elif i + 1 < len(rest):
                    value = rest[i + 1]
                    i += 1
                else:
                    raise PveumError(f"400 missing value for option '{name}'")
                params[name] = value
            else:
                args.append(arg)
            i += 1
        if len(args) > len(positional) or (words != ("user", "permissions") and len(args) < len(positional)):
            raise PveumError(f"400 wrong number of arguments for 'pveum {' '.join(words)}'")
        params.update(zip(positional, args, strict=False))
        if words == ("user", "token", "permissions"):
            params["userid"] = f"{params['userid']}!{params.pop('tokenid')}"
        path = template
        for key in ("userid", "tokenid", "roleid"):
            if "{" + key + "}" in path:
                path = path.replace("{" + key + "}", params.pop(key))
        return method, path, params, words
    raise PveumError(f"400 unknown command 'pveum {' '.join(argv)}'")


def run(root: Path, argv: list[str], out: TextIO | None = None) -> Any:
    """Run one pveum command as root@pam; returns the API result, prints it like the CLI's text output."""
    method, path, params, words = parse(argv)
    fmt = params.pop("output-format", "text")
    if fmt not in ("text", "json", "json-pretty", "yaml"):
        raise PveumError(f"400 Parameter verification failed.\noutput-format: value '{fmt}' does not have a value"
                         " in the enumeration 'text, json, json-pretty, yaml'")
    ctx = Ctx(Path(root), layout.load_node(root)["node"], None, access.ROOT)  # type: ignore[arg-type]
    try:
        result = build_router().dispatch(ctx, method, path, params).data
    except ApiError as exc:
        detail = "".join(f"\n{k}: {v.rstrip()}" for k, v in (exc.errors or {}).items())
        raise PveumError(f"{exc.message.rstrip()}{detail}") from None
    if out is not None and result is not None:
        out.write(render(words, result) if fmt == "text" else json.dumps(result, indent=2 if fmt != "json" else None)
                  + "\n")
    return result


def render(words: tuple[str, ...], result: Any) -> str:
    if words == ("user", "token", "add"):
        rows = [("full-tokenid", result["full-tokenid"]), ("info", json.dumps(result["info"], sort_keys=True)),
                ("value", result["value"])]
        return _table(("key", "value"), rows)
    if words[-1] == "permissions":
        # pveum.pm: one privilege per line, ' (*)' when it propagates, then a legend
        rows = [(path if i == 0 else "", f"{p}{' (*)' if v else ''}")
                for path, privs in sorted(result.items()) for i, (p, v) in enumerate(sorted(privs.items()))]
        return _table(("ACL path", "Permissions"), rows) + \
            "Permissions marked with '(*)' have the 'propagate' flag set.\n"
    return json.dumps(result, indent=2, sort_keys=True) + "\n"


def _table(head: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    w0 = max(len(head[0]), *(len(r[0]) for r in rows)) if rows else len(head[0])
    w1 = max(len(head[1]), *(len(r[1]) for r in rows)) if rows else len(head[1])
    line = f"+{'-' * (w0 + 2)}+{'-' * (w1 + 2)}+\n"
    body = "".join(f"| {a:<{w0}} | {b:<{w1}} |\n" for a, b in rows)
    return line + f"| {head[0]:<{w0}} | {head[1]:<{w1}} |\n" + line + body + line


def doc_commands(doc: Path = DOCS) -> list[list[str]]:
    """The `pveum` command lines of a Markdown file's shell blocks, as argv lists (comments dropped)."""
    if not doc.is_file():
        raise PveumError(f"{doc}: not found (the lab provisions its API token from the documented commands)")
    cmds, in_block = [], False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            in_block = not in_block and line.strip() in ("```sh", "```bash", "```shell")
            continue
        if in_block and line.lstrip().startswith("pveum "):
            words = shlex.split(line, comments=True)
            # a pipeline or redirection after the command is the shell's business, not pveum's
            cut = next((i for i, w in enumerate(words) if w in ("|", ">", ">>", "&&", ";")), len(words))
            cmds.append(words[1:cut])
    if not cmds:
        raise PveumError(f"{doc}: no pveum command in its shell blocks")
    return cmds


def provision_from_docs(root: Path, doc: Path = DOCS, out: TextIO | None = None) -> dict[str, str]:
    """Run every documented pveum line against the node; returns {token id: secret} of tokens it created."""
    tokens: dict[str, str] = {}
    for argv in doc_commands(doc):
        result = run(root, argv, out)
        if isinstance(result, dict) and "full-tokenid" in result:
            tokens[result["full-tokenid"]] = result["value"]
    return tokens


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--root":
        print("usage: python -m restic_orch.lab.pve.pveum --root R <pveum subcommand ...>", file=sys.stderr)
        return 2
    try:
        run(Path(args[1]), args[2:], sys.stdout)
    except PveumError as exc:
        print(exc, file=sys.stderr)
        return 255
    return 0


if __name__ == "__main__":
    sys.exit(main())
