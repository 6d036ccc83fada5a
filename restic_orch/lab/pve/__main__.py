"""CLI: python -m restic_orch.lab.pve {init|serve|unlock} --root R ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .layout import token_secret
from .node import create_node, unlock
from .server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restic_orch.lab.pve", description="Fake Proxmox VE node")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_init = sub.add_parser("init", help="lay out a new fake node below --root")
    p_init.add_argument("--root", type=Path, required=True)
    p_init.add_argument("--node", default="pve1")
    p_init.add_argument("--size-bytes", type=int, default=3 * 1024 * 1024, help="bytes per container rootfs")
    p_init.add_argument("--seed", type=int, default=0)
    p_serve = sub.add_parser("serve", help="serve the API over HTTPS until SIGTERM")
    p_serve.add_argument("--root", type=Path, required=True)
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8006, help="0 picks a free port")
    p_serve.add_argument("--certfile", type=Path)
    p_serve.add_argument("--keyfile", type=Path)
    p_unlock = sub.add_parser("unlock", help="like `pct unlock VMID`")
    p_unlock.add_argument("--root", type=Path, required=True)
    p_unlock.add_argument("vmid", type=int)
    p_secret = sub.add_parser("token-secret", help="print the API token secret")
    p_secret.add_argument("--root", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "init":
        create_node(args.root, node=args.node, size_bytes=args.size_bytes, seed=args.seed)
    elif args.cmd == "serve":
        serve(args.root, args.host, args.port, args.certfile, args.keyfile)
    elif args.cmd == "unlock":
        unlock(args.root, args.vmid)
    else:
        print(token_secret(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
