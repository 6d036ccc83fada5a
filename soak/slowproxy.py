"""A slow S3: a TCP forwarder that holds every chunk back (latency) and caps the throughput.

`python -m soak.slowproxy --listen PORT --target PORT --delay 0.03 --kib-per-second 2048` takes the place of
the lab's own forwarder (restic_orch/lab/tcpproxy.py) for one night, on the same port, so the configuration
and moto's in-memory buckets stay as they are.
"""

from __future__ import annotations

import argparse
import time

from restic_orch.lab import tcpproxy


def serve(listen_port: int, target_port: int, delay: float, rate: float, host: str = "127.0.0.1") -> None:
    def hold(nbytes: int) -> None:
        time.sleep(delay + nbytes / rate)

    tcpproxy.serve(listen_port, target_port, host, hold=hold,
                   what=f"slow forwarding (+{delay}s, {rate:.0f} B/s)")


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
