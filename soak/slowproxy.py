"""A slow S3: a TCP forwarder that holds every chunk back (latency) and caps the throughput.

`python -m soak.slowproxy --listen PORT --target PORT --delay 0.03 --kib-per-second 2048` takes the place of
the lab's own forwarder (restic_orch/lab/tcpproxy.py) for one night, on the same port, so the configuration
and moto's in-memory buckets stay as they are.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time


def _pipe(src: socket.socket, dst: socket.socket, delay: float, rate: float) -> None:
    try:
        while data := src.recv(65536):
            time.sleep(delay + len(data) / rate)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen_port: int, target_port: int, delay: float, rate: float, host: str = "127.0.0.1") -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, listen_port))
    server.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"slow forwarding {host}:{listen_port} -> {host}:{target_port} (+{delay}s, {rate:.0f} B/s)", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection((host, target_port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b, delay, rate), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.03, help="seconds added to every chunk")
    parser.add_argument("--kib-per-second", type=float, default=2048)
    args = parser.parse_args()
    serve(args.listen, args.target, args.delay, args.kib_per_second * 1024)


if __name__ == "__main__":
    main()
