"""A TCP forwarder in front of the lab's S3 server: killing it makes S3 unreachable while moto keeps its data.

Fault tests stop the proxy (connection refused, or connections cut in the middle of a copy) and start it
again on the same port; moto keeps objects only in memory, so restarting moto itself would lose the
offsite repository.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Callable

# called with each chunk's size before it is passed on: how a slow link is played (soak/slowproxy.py)
Hold = Callable[[int], None]


def _pipe(src: socket.socket, dst: socket.socket, hold: Hold | None = None) -> None:
    try:
        while data := src.recv(65536):
            if hold is not None:
                hold(len(data))
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen_port: int, target_port: int, host: str = "127.0.0.1", hold: Hold | None = None,
          what: str = "forwarding") -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, listen_port))
    server.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{what} {host}:{listen_port} -> {host}:{target_port}", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection((host, target_port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b, hold), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    args = parser.parse_args()
    serve(args.listen, args.target)


if __name__ == "__main__":
    main()
