"""What the generated container trees contain: a shared Debian-like base plus per-role files.

The base system is seeded only by (seed, size_bytes), so every container created with the
same arguments carries byte-identical copies of it; role files and logs are per container.
"""

from __future__ import annotations

import gzip
import random
import struct

from .rootfs import Tree

BASE_SHARE = 0.6  # fraction of a container's bytes that belong to the shared base system

WORDS = (
    "system service daemon config network packet kernel module socket buffer memory cache "
    "request response client server session token backup restore archive snapshot volume "
    "storage cluster node container process thread signal timeout retry error warning info "
    "debug trace user group permission access file directory path mount device driver "
    "update upgrade install remove package version release stable testing security patch"
).split()

BINARIES = (
    "bash dash ls cp mv rm cat grep sed awk find xargs tar gzip zstd ssh scp curl wget ps top "
    "kill mount umount systemctl journalctl apt apt-get dpkg perl python3 vim less more sort "
    "uniq head tail cut tr wc du df ln chmod chown id who date sleep env ip ping ss hostname"
).split()

LIBS = (
    "libc.so.6 libm.so.6 libssl.so.3 libcrypto.so.3 libz.so.1 libzstd.so.1 liblzma.so.5 "
    "libsystemd.so.0 libselinux.so.1 libpcre2-8.so.0 libgcrypt.so.20 libstdc++.so.6 "
    "libgcc_s.so.1 libcurl.so.4 libexpat.so.1 libffi.so.8 libsqlite3.so.0 libuuid.so.1"
).split()

PACKAGES = (
    "base-files bash coreutils dpkg apt tar gzip zstd openssh-server curl wget perl python3 "
    "systemd util-linux procps iproute2 vim-tiny less sed grep findutils libc6 libssl3 "
    "ca-certificates tzdata cron logrotate rsyslog sudo"
).split()

# Non-ASCII names exercise PAX headers in archives and encoding handling in the product.
UNICODE_DOCS = ("café-utils/LISEZ-MOI.txt", "naïve-tools/Übersicht.txt", "日本語/説明.txt")


def _elf_header() -> bytes:
    # e_ident + e_type/e_machine: restore's architecture detection reads machine 0x3e (amd64).
    return b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 3, 0x3E)


def _lines(rng: random.Random, count: int, fmt: str = "{w}") -> str:
    out = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        out.append(fmt.format(i=i, w=words))
    return "\n".join(out) + "\n"


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def build_base(tree: Tree, seed: int, size_bytes: int) -> None:
    """The part shared by all containers: seeded only by seed and size_bytes."""
    rng = random.Random(f"base:{seed}:{size_bytes}")
    mt = 1_700_000_000
    for d in ("boot", "dev", "etc", "home", "media", "mnt", "opt", "proc", "run", "srv", "sys",
              "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib/x86_64-linux-gnu", "usr/lib64",
              "usr/share", "usr/share/doc", "usr/share/man/man1", "var", "var/cache/apt",
              "var/lib/apt/lists", "var/lib/dpkg", "var/log", "var/spool/cron", "var/mail"):
        tree.dir(d, mtime=mt)
    tree.dir("root", mode=0o700, mtime=mt)
    tree.dir("tmp", mode=0o1777, mtime=mt)
    tree.dir("var/tmp", mode=0o1777, mtime=mt)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64"), ("var/run", "/run")):
        tree.symlink(link, target, mtime=mt)
    tree.text("etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
              'VERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n', mtime=mt)
    tree.text("etc/debian_version", "12.7\n", mtime=mt)
    tree.text("etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
              "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
              "postgres:x:105:110::/var/lib/postgresql:/bin/bash\n", mtime=mt)
    tree.text("etc/group", "root:x:0:\nshadow:x:42:\nwww-data:x:33:\npostgres:x:110:\n", mtime=mt)
    tree.text("etc/shadow", "root:$y$j9T$fakefakefake$fakehash:19700:0:99999:7:::\n", mode=0o640, gid=42,
              mtime=mt)
    tree.text("etc/fstab", "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n", mtime=mt)
    tree.text("etc/apt/sources.list", "deb http://deb.debian.org/debian bookworm main contrib\n"
              "deb http://deb.debian.org/debian bookworm-updates main contrib\n", mtime=mt)
    tree.text("etc/ssh/sshd_config", _lines(rng, 60, "# {w}"), mtime=mt)
    tree.symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC", mtime=mt)
    tree.text("usr/share/zoneinfo/Etc/UTC", b"TZif2" + bytes(39) + b"UTC\x00", mtime=mt)
    for name in BINARIES:
        tree.blob(f"usr/bin/{name}", rng.uniform(0.5, 3.0), f"bin:{seed}:{name}", mode=0o755,
                  zero_frac=0.2, prefix=_elf_header(), mtime=mt + rng.randint(0, 9999))
    tree.symlink("usr/bin/sh", "dash", mtime=mt)
    tree.hardlink("usr/bin/perl5.36.0", "usr/bin/perl")
    for name in LIBS:
        tree.blob(f"usr/lib/x86_64-linux-gnu/{name}", rng.uniform(1.0, 6.0), f"lib:{seed}:{name}",
                  zero_frac=0.1, prefix=_elf_header(), mtime=mt + rng.randint(0, 9999))
    for pkg in PACKAGES:
        tree.text(f"usr/share/doc/{pkg}/copyright", _lines(rng, rng.randint(10, 60)), mtime=mt)
        tree.text(f"usr/share/doc/{pkg}/changelog.Debian.gz", _gz(_lines(rng, rng.randint(50, 300))),
                  mtime=mt)
        tree.text(f"usr/share/man/man1/{pkg}.1.gz", _gz(_lines(rng, 80, ".TP\n{w}")), mtime=mt)
    for path in UNICODE_DOCS:
        tree.text(f"usr/share/doc/{path}", _lines(rng, 20), mtime=mt)
    status = "".join(f"Package: {p}\nStatus: install ok installed\nVersion: 1.{i}\n"
                     f"Description: {rng.choice(WORDS)} {rng.choice(WORDS)}\n\n" for i, p in enumerate(PACKAGES))
    tree.text("var/lib/dpkg/status", status, mtime=mt)
    tree.blob("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4",
              4.0, f"apt:{seed}", mtime=mt)
    tree.text("var/log/dpkg.log", _lines(rng, 200, "2024-01-12 10:00:{i:02} status installed {w}"), mtime=mt)


def _common_host(tree: Tree, rng: random.Random, hostname: str, mt: int) -> None:
    tree.text("etc/hostname", f"{hostname}\n", mtime=mt)
    tree.text("etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {hostname}.lab.internal {hostname}\n", mtime=mt)
    tree.text("etc/machine-id", f"{rng.getrandbits(128):032x}\n", mode=0o444, mtime=mt)
    tree.text("etc/ssh/ssh_host_ed25519_key", rng.randbytes(400), mode=0o600, mtime=mt)
    tree.text("etc/ssh/ssh_host_ed25519_key.pub", f"ssh-ed25519 AAAA{rng.getrandbits(256):064x} root@{hostname}\n",
              mtime=mt)
    tree.dir("root/.ssh", mode=0o700, mtime=mt)
    tree.text("root/.ssh/authorized_keys", f"ssh-ed25519 AAAA{rng.getrandbits(256):064x} admin@lab\n",
              mode=0o600, mtime=mt)
    tree.text("root/.bash_history", _lines(rng, 40, "{w}"), mode=0o600, mtime=mt)
    tree.text("var/log/syslog", _lines(rng, 400, f"Jan 12 03:00:{{i:02}} {hostname} {{w}}"), mode=0o640, mtime=mt)
    tree.text("var/log/syslog.2.gz", _gz(_lines(rng, 600)), mode=0o640, mtime=mt)
    tree.text("var/log/auth.log", _lines(rng, 100, f"Jan 12 sshd[{{i}}]: {{w}} on {hostname}"), mode=0o640,
              mtime=mt)
    # Scratch files vzdump leaves out of archives by default (stdexcludes).
    tree.text("tmp/sess_0001", rng.randbytes(256), mtime=mt)
    tree.text("var/tmp/build.tmp", rng.randbytes(256), mtime=mt)


def _proxy(tree: Tree, rng: random.Random, tag: str, mt: int) -> None:
    tree.text("etc/nginx/nginx.conf", "user www-data;\nworker_processes auto;\nevents { worker_connections 768; }\n"
              "http {\n    include /etc/nginx/sites-enabled/*;\n}\n", mtime=mt)
    tree.text("etc/nginx/sites-available/default", "server {\n    listen 443 ssl;\n    server_name lab;\n"
              "    location / { proxy_pass http://10.0.0.14:8080; }\n}\n", mtime=mt)
    tree.symlink("etc/nginx/sites-enabled/default", "../sites-available/default", mtime=mt)
    tree.text("etc/ssl/private/proxy.key", rng.randbytes(1200), mode=0o600, mtime=mt)
    tree.text("var/www/html/index.html", "<!doctype html><title>lab</title><h1>It works</h1>\n", uid=33, gid=33,
              mtime=mt)
    for i in range(12):
        tree.blob(f"var/www/html/assets/img-{i:02}.png", rng.uniform(0.5, 2), f"{tag}:img{i}", uid=33, gid=33,
                  prefix=b"\x89PNG\r\n\x1a\n", mtime=mt)
    tree.text("var/log/nginx/access.log", _lines(rng, 800, '10.0.0.{i} - - "GET /{w}" 200'), mode=0o640,
              mtime=mt)
    tree.blob("var/cache/nginx/proxy_cache.bin", 10.0, f"{tag}:cache", mtime=mt)


def _database(tree: Tree, rng: random.Random, tag: str, mt: int) -> None:
    pg = {"uid": 105, "gid": 110}
    tree.text("etc/postgresql/15/main/postgresql.conf", _lines(rng, 120, "#{w} = on"), **pg, mtime=mt)
    tree.text("etc/postgresql/15/main/pg_hba.conf", "local all postgres peer\nhost all all 10.0.0.0/24 scram-sha-256\n",
              mode=0o640, **pg, mtime=mt)
    tree.dir("var/lib/postgresql/15/main", mode=0o700, **pg, mtime=mt)
    tree.text("var/lib/postgresql/15/main/PG_VERSION", "15\n", mode=0o600, **pg, mtime=mt)
    for rel in range(16384, 16404):
        tree.blob(f"var/lib/postgresql/15/main/base/16384/{rel}", rng.uniform(0.5, 4), f"{tag}:rel{rel}",
                  mode=0o600, zero_frac=0.3, **pg, mtime=mt)
    tree.blob("var/lib/postgresql/15/main/pg_wal/000000010000000000000001", 6.0, f"{tag}:wal", mode=0o600,
              **pg, mtime=mt)
    tree.text("var/backups/nightly-dump.sql.gz", _gz(_lines(rng, 2000, "INSERT INTO t VALUES ({i}, '{w}');")),
              mode=0o600, mtime=mt)


def _monitoring(tree: Tree, rng: random.Random, tag: str, mt: int) -> None:
    tree.text("etc/prometheus/prometheus.yml", "global:\n  scrape_interval: 15s\nscrape_configs:\n"
              "  - job_name: node\n    static_configs:\n      - targets: ['10.0.0.11:9100']\n", mtime=mt)
    for i in range(6):
        tree.text(f"etc/prometheus/rules/rule-{i}.yml", _lines(rng, 30, "  - alert: {w}"), mtime=mt)
    block = "var/lib/prometheus/metrics2/01HQ3YV8K6RZ0S0T3M6C9Y2B7D"
    tree.text(f"{block}/meta.json", '{"version":1,"ulid":"01HQ3YV8K6RZ0S0T3M6C9Y2B7D"}\n', mtime=mt)
    for i in range(1, 5):
        tree.blob(f"{block}/chunks/{i:06}", rng.uniform(2, 5), f"{tag}:chunk{i}", mtime=mt)
    tree.blob(f"{block}/index", 2.0, f"{tag}:index", mtime=mt)
    tree.text("etc/grafana/grafana.ini", _lines(rng, 80, ";{w} ="), mode=0o640, mtime=mt)
    tree.blob("var/lib/grafana/grafana.db", 4.0, f"{tag}:gdb", mode=0o640, zero_frac=0.5,
              prefix=b"SQLite format 3\x00", mtime=mt)


def _apps(tree: Tree, rng: random.Random, tag: str, mt: int) -> None:
    for i in range(40):
        tree.text(f"opt/app/src/module_{i:02}.py", _lines(rng, rng.randint(10, 80), "    # {w}"), mtime=mt)
    tree.text("opt/app/run.sh", "#!/bin/sh\nexec python3 -m app\n", mode=0o755, mtime=mt)
    for pkg in ("left-pad", "lodash", "express", "debug", "ms"):
        tree.text(f"opt/app/node_modules/{pkg}/package.json", f'{{"name": "{pkg}", "version": "1.0.0"}}\n', mtime=mt)
        tree.text(f"opt/app/node_modules/{pkg}/index.js", _lines(rng, 30, "// {w}"), mtime=mt)
    uploads = ("Rechnung-März-2024.pdf", "résumé Zoë.docx", "日本語のメモ.txt", "📦 release-notes.md",
               "naïve café.jpg")
    for i, name in enumerate(uploads):
        tree.blob(f"srv/uploads/{name}", rng.uniform(1, 3), f"{tag}:up{i}", uid=33, gid=33, mtime=mt)
    tree.blob("srv/data/app.sqlite", 8.0, f"{tag}:sqlite", zero_frac=0.4, prefix=b"SQLite format 3\x00",
              uid=33, gid=33, mtime=mt)


PROFILES = {"proxy": _proxy, "database": _database, "monitoring": _monitoring, "apps": _apps}


def build_tree(hostname: str, vmid: int, size_bytes: int, seed: int, profile: str | None = None) -> Tree:
    base = Tree()
    build_base(base, seed, size_bytes)
    base.scale_to(int(size_bytes * BASE_SHARE))
    own = Tree()
    rng = random.Random(f"ct:{seed}:{vmid}:{hostname}")
    tag = f"ct{seed}:{vmid}"
    mt = 1_710_000_000 + vmid
    _common_host(own, rng, hostname, mt)
    PROFILES.get(profile or hostname, _apps)(own, rng, tag, mt)
    own.scale_to(size_bytes - int(size_bytes * BASE_SHARE))
    return Tree(base.entries + own.entries)
