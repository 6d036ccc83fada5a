"""One module per measured scenario of the benchmark; bench.run sequences them.

(a) product: restic-orch itself · (b) raw: raw restic, the floor · (c) naive: tar | zstd | S3 ·
(d) borg: borg create · (z) zstd: vzdump compress=zstd instead of 0 · (e) fs: restic on the containers'
root filesystems · vi1: a suspend-mode probe · profile: one more backup under py-spy ·
(r) restore: the host-lost restore from offsite against its floor.
"""
