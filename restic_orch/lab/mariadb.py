"""A real MariaDB 10.11 server for the simulated homelab (127.0.0.1, free port).

Clients always connect over TCP with a 0600 ``--defaults-extra-file`` holding the
credentials, the way the product must (a password in argv shows in ``ps``). ``root`` is the
lab's administrator (seeding, and the tests' ground truth); the product's two accounts,
``backup`` and ``restore``, are made by docs/sql/mariadb-accounts.sql, the file
docs/getting-started.md tells a user to run: neither has root's rights.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from restic_orch.lab import procs
from restic_orch.lab.secrets import check_password, new_password, read_secret, secrets_dir, write_secret

MYSQL_USER = "mysql"
BACKUP_USER = "backup"
RESTORE_USER = "restore"
ACCOUNTS_SQL = Path(__file__).resolve().parents[2] / "docs" / "sql" / "mariadb-accounts.sql"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes

# Speed over durability: lab data is throw-away.
_SERVER_OPTS = [
    "--skip-log-bin", "--skip-name-resolve", "--bind-address=127.0.0.1",
    "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
    "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=32M",
    "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
]


def _bin(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin") or name


def _cnf(user: str, password: str, port: int) -> str:
    return (f"[client]\nuser={user}\npassword={password}\nhost=127.0.0.1\nport={port}\n"
            "protocol=TCP\ndefault-character-set=utf8mb4\n")


def _setup_sql(root_password: str) -> str:
    # The password went through check_password(): no quote can break out of the literal.
    statements = [
        "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1')",
        "DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1')",
        "FLUSH PRIVILEGES",
        f"ALTER USER root@localhost IDENTIFIED BY '{root_password}'",
        f"ALTER USER root@'127.0.0.1' IDENTIFIED BY '{root_password}'",
    ]
    return ";\n".join(statements) + ";\n"


def apply_accounts(info: dict) -> None:
    """Run docs/sql/mariadb-accounts.sql as root, as the docs say (again after adding an application).

    The passwords are set first in the same session, as the docs show; on stdin, never in argv.
    """
    mariadb_sql(info, f"SET @backup_password = '{check_password(info['password'])}',"
                      f" @restore_password = '{check_password(info['restore_password'])}';\n"
                      + ACCOUNTS_SQL.read_text())


def _prepare_home(home: Path) -> Path:
    """Make ``home`` and the directory for the socket and pid file; return that directory."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)  # the mysql user must traverse it; data/ is mysql's own
    procs.check_traversable(home, MYSQL_USER)
    run_dir = home / "run"
    if len(str(run_dir / "mysqld.sock")) > _MAX_SOCKET_PATH:
        run_dir = Path(tempfile.mkdtemp(prefix="lab-mdb-"))
    run_dir.mkdir(exist_ok=True)
    procs.chown_tree(run_dir, MYSQL_USER)
    return run_dir


def _passwords(sdir: Path, fresh: bool, root_password: str | None,
               password: str | None) -> tuple[str, str, str]:
    """root's, ``backup``'s and ``restore``'s passwords: the saved ones on an existing data dir, else
    the given or random ones."""
    restore_password = None
    if not fresh:
        root_password, password = read_secret(sdir / "mysql-root-password"), read_secret(sdir / "mysql-password")
        restore_file = sdir / "mysql-restore-password"
        restore_password = read_secret(restore_file) if restore_file.exists() else None
    return (check_password(root_password or new_password()), check_password(password or new_password()),
            check_password(restore_password or new_password()))


def _install_db(datadir: Path) -> None:
    datadir.mkdir(parents=True, exist_ok=True)
    procs.chown_tree(datadir, MYSQL_USER)
    procs.run([_bin("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", "--user=mysql",
               "--auth-root-authentication-method=normal", "--skip-test-db",
               "--innodb-log-file-size=32M"], what="mariadb-install-db")


def _server_info(pid: int, port: int, datadir: Path, socket: Path, log_path: Path, sdir: Path,
                 passwords: tuple[str, str, str]) -> dict:
    root_password, password, restore_password = passwords
    return {
        "kind": "mariadb",
        "pid": pid,
        "host": "127.0.0.1",
        "port": port,
        "datadir": str(datadir),
        "socket": str(socket),
        "log": str(log_path),
        "user": BACKUP_USER,
        "password": password,
        "password_file": str(sdir / "mysql-password"),
        "defaults_file": str(sdir / "mysql-backup.cnf"),
        "restore_user": RESTORE_USER,
        "restore_password": restore_password,
        "restore_password_file": str(sdir / "mysql-restore-password"),
        "restore_defaults_file": str(sdir / "mysql-restore.cnf"),
        "root_password": root_password,
        "root_password_file": str(sdir / "mysql-root-password"),
        "root_defaults_file": str(sdir / "mysql-root.cnf"),
    }


def _wait_and_set_up(info: dict, fresh: bool) -> None:
    """Wait for the server, secure root on a new install, make the product's accounts; stop it on failure."""
    port, root_password = info["port"], info["root_password"]
    try:
        procs.wait_ready(procs.tcp_ready("127.0.0.1", port), pid=info["pid"], log_path=Path(info["log"]),
                         timeout=30, what="mariadbd")
        if fresh:
            # The only passwordless login ever: root over the socket of a brand-new
            # install. Passwords go in SQL on stdin, never argv.
            procs.run(
                [_bin("mariadb"), "--no-defaults", f"--socket={info['socket']}", "-uroot"],
                input_text=_setup_sql(root_password),
                what="mariadb initial setup",
            )
        write_secret(Path(info["root_password_file"]), root_password + "\n")
        write_secret(Path(info["root_defaults_file"]), _cnf("root", root_password, port))
        apply_accounts(info)
    except Exception:
        stop_mariadb(info)
        raise


def start_mariadb(
    base_dir: Path,
    port: int | None = None,
    root_password: str | None = None,
    password: str | None = None,
) -> dict:
    """Start (installing if needed) a server in ``base_dir/mariadb``; return its info dict.

    ``root_password`` / ``password`` (the ``backup`` user's): random when None; the
    ``restore`` user's is random too. On an existing data dir the server is restarted with the
    credentials saved under ``secrets/`` (the passwords live in the data dir, so new ones are
    ignored).
    """
    base_dir = Path(base_dir).resolve()
    home = base_dir / "mariadb"
    datadir = home / "data"
    log_path = home / "mariadb.log"
    run_dir = _prepare_home(home)
    socket = run_dir / "mysqld.sock"

    sdir = secrets_dir(base_dir)
    fresh = not (datadir / "mysql").is_dir()
    passwords = _passwords(sdir, fresh, root_password, password)

    if fresh:
        _install_db(datadir)

    port = port or procs.free_port()
    pid = procs.start_daemon(
        [_bin("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--socket={socket}",
         f"--port={port}", f"--pid-file={run_dir / 'mariadbd.pid'}", *_SERVER_OPTS],
        log_path, user=MYSQL_USER,
    )
    info = _server_info(pid, port, datadir, socket, log_path, sdir, passwords)
    _wait_and_set_up(info, fresh)
    write_secret(Path(info["password_file"]), info["password"] + "\n")
    write_secret(Path(info["restore_password_file"]), info["restore_password"] + "\n")
    write_secret(Path(info["defaults_file"]), _cnf(BACKUP_USER, info["password"], port))
    write_secret(Path(info["restore_defaults_file"]), _cnf(RESTORE_USER, info["restore_password"], port))
    return info


def stop_mariadb(info: dict) -> None:
    """SIGTERM = clean shutdown (InnoDB flushes and exits)."""
    procs.stop_pid(int(info["pid"]), timeout=30, match="mariadbd")
    run_dir = Path(info["socket"]).parent
    if run_dir.name.startswith("lab-mdb-"):  # the short-path fallback in /tmp
        shutil.rmtree(run_dir, ignore_errors=True)


def mariadb_sql(info: dict, sql: str, database: str | None = None, *, timeout: float = 3600) -> str:
    """Run SQL as root over TCP (credentials from the 0600 defaults file); return tab output."""
    argv = [_bin("mariadb"), f"--defaults-extra-file={info['root_defaults_file']}", "--batch",
            "--skip-column-names"]
    if database:
        argv.append(database)
    return procs.run(argv, input_text=sql, timeout=timeout, what=f"mariadb {database or ''}".strip())


# --- seed data ------------------------------------------------------------------------

# Fixed non-ASCII rows: tests compare them byte for byte after a round trip.
CUSTOMERS = [
    ("Élodie Dupré", "elodie@example.fr", "FR"),
    ("佐藤 花子", "hanako@example.jp", "JP"),
    ("Kjell 🎣 Åström", "kjell@example.se", "SE"),
    ("Zoë Łukasiewicz-Nuñez", "zoe@example.pl", "PL"),
]


def _blob_expr(var: str, kib: int) -> str:
    # kib KiB of SHA-512 output: deterministic but incompressible, like real images.
    parts = [f"UNHEX(SHA2(CONCAT({var}, ':{j}'), 512))" for j in range(16 * kib)]
    return "CONCAT(" + ", ".join(parts) + ")"


_BLOG_SQL = """
CREATE DATABASE blog CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE blog;
CREATE TABLE wp_users (
  ID bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_login varchar(60) NOT NULL UNIQUE, display_name varchar(250) NOT NULL,
  user_email varchar(100) NOT NULL, user_registered datetime NOT NULL) ENGINE=InnoDB;
INSERT INTO wp_users (user_login, display_name, user_email, user_registered)
SELECT CONCAT('author', seq), CONCAT(ELT(1 + seq % 4, 'Jérôme', '鈴木', 'Ola 🌊', 'Çağla'), ' ', seq),
       CONCAT('author', seq, '@blog.example'), '2022-01-01' + INTERVAL seq HOUR
FROM seq_1_to_{nusers};
CREATE TABLE wp_posts (
  ID bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
  post_author bigint unsigned NOT NULL, post_title text NOT NULL, post_content longtext NOT NULL,
  post_status varchar(20) NOT NULL DEFAULT 'publish', post_date datetime NOT NULL,
  comment_count bigint NOT NULL DEFAULT 0,
  CONSTRAINT fk_post_author FOREIGN KEY (post_author) REFERENCES wp_users (ID)) ENGINE=InnoDB;
INSERT INTO wp_posts (post_author, post_title, post_content, post_status, post_date)
SELECT 1 + seq % {nusers}, CONCAT('Billet n°', seq, ' — 日記 ✍️'),
       REPEAT(CONCAT('Le vif zéphyr jubile sur les kiwis. ', MD5(seq), ' '), 14),
       IF(seq % 10 = 0, 'draft', 'publish'), '2023-01-01' + INTERVAL seq MINUTE
FROM seq_1_to_{nposts};
CREATE TABLE wp_comments (
  comment_ID bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
  comment_post_ID bigint unsigned NOT NULL, comment_author tinytext NOT NULL,
  comment_content text NOT NULL, comment_approved varchar(20) NOT NULL DEFAULT '1',
  comment_date datetime NOT NULL,
  CONSTRAINT fk_comment_post FOREIGN KEY (comment_post_ID) REFERENCES wp_posts (ID) ON DELETE CASCADE
) ENGINE=InnoDB;
CREATE TABLE wp_options (
  option_id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
  option_name varchar(191) NOT NULL UNIQUE, option_value longtext NOT NULL,
  autoload varchar(20) NOT NULL DEFAULT 'yes') ENGINE=InnoDB;
INSERT INTO wp_options (option_name, option_value) VALUES
  ('siteurl', 'https://blog.lab.example'), ('blogname', 'Carnet de bord — 家庭実験室 🏠'),
  ('admin_email', 'admin@lab.example'), ('timezone_string', 'Europe/Paris');
DELIMITER ;;
CREATE TRIGGER wp_comments_count AFTER INSERT ON wp_comments FOR EACH ROW
BEGIN
  UPDATE wp_posts SET comment_count = comment_count + 1 WHERE ID = NEW.comment_post_ID;
END;;
DELIMITER ;
INSERT INTO wp_comments (comment_post_ID, comment_author, comment_content, comment_approved, comment_date)
SELECT 1 + seq % {nposts}, ELT(1 + seq % 3, 'Anaïs', '田中', 'Bjørn 🐻'),
       CONCAT('Très bon article ! ', MD5(seq), ' 👍'), IF(seq % 20 = 0, 'spam', '1'),
       '2023-06-01' + INTERVAL seq MINUTE
FROM seq_1_to_{ncomments};
CREATE VIEW published_posts AS
  SELECT p.ID, p.post_title, u.display_name, p.comment_count
  FROM wp_posts p JOIN wp_users u ON u.ID = p.post_author WHERE p.post_status = 'publish';
-- Far-future start (TIMESTAMP ends in 2038): the event exists (mariadb-dump --events
-- must carry it) but never fires, so the data stays ground truth.
CREATE EVENT purge_spam ON SCHEDULE EVERY 1 DAY STARTS '2037-01-01 03:00:00'
  DO DELETE FROM wp_comments WHERE comment_approved = 'spam';
"""

_SHOP_SQL = """
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;
CREATE TABLE customers (
  id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, name varchar(200) NOT NULL,
  email varchar(200) NOT NULL UNIQUE, country char(2) NOT NULL) ENGINE=InnoDB;
INSERT INTO customers (name, email, country) VALUES {customers};
INSERT INTO customers (name, email, country)
SELECT CONCAT('Client ', seq, ' ', ELT(1 + seq % 3, 'Müller', 'Ñandú', '王')), CONCAT('c', seq, '@shop.example'),
       ELT(1 + seq % 4, 'FR', 'DE', 'JP', 'ES')
FROM seq_1_to_{ncustomers};
CREATE TABLE products (
  id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, sku varchar(32) NOT NULL UNIQUE,
  name varchar(200) NOT NULL, description text, price decimal(10,2) NOT NULL,
  stock int NOT NULL, image mediumblob) ENGINE=InnoDB;
INSERT INTO products (sku, name, description, price, stock, image)
SELECT CONCAT('SKU-', LPAD(seq, 6, '0')), CONCAT(ELT(1 + seq % 3, 'Câble', 'ケーブル', 'Disque 💾'), ' ', seq),
       CONCAT('Produit de démonstration ', seq), 1 + (seq % 500) + 0.99, 1000000, {blob}
FROM seq_1_to_{nproducts};
CREATE TABLE orders (
  id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, customer_id int unsigned NOT NULL,
  status enum('new','paid','shipped','cancelled') NOT NULL DEFAULT 'new', created datetime NOT NULL,
  CONSTRAINT fk_order_customer FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB;
INSERT INTO orders (customer_id, status, created)
SELECT 1 + seq % {ncustomers}, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
       '2024-01-01' + INTERVAL seq MINUTE
FROM seq_1_to_{norders};
CREATE TABLE order_items (
  order_id int unsigned NOT NULL, product_id int unsigned NOT NULL, qty int NOT NULL,
  price decimal(10,2) NOT NULL, PRIMARY KEY (order_id, product_id),
  CONSTRAINT fk_item_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
  CONSTRAINT fk_item_product FOREIGN KEY (product_id) REFERENCES products (id)) ENGINE=InnoDB;
DELIMITER ;;
CREATE TRIGGER order_items_stock AFTER INSERT ON order_items FOR EACH ROW
BEGIN
  UPDATE products SET stock = stock - NEW.qty WHERE id = NEW.product_id;
END;;
CREATE FUNCTION order_total(oid int unsigned) RETURNS decimal(12,2) READS SQL DATA
BEGIN
  RETURN (SELECT COALESCE(SUM(qty * price), 0) FROM order_items WHERE order_id = oid);
END;;
CREATE PROCEDURE restock(IN pid int unsigned, IN n int)
BEGIN
  UPDATE products SET stock = stock + n WHERE id = pid;
END;;
DELIMITER ;
INSERT INTO order_items (order_id, product_id, qty, price)
SELECT 1 + (seq - 1) DIV 3, 1 + ((seq - 1) DIV 3 * 7 + (seq - 1) % 3) % {nproducts}, 1 + seq % 5, 9.99
FROM seq_1_to_{nitems};
CREATE VIEW order_summary AS
  SELECT o.id, c.name AS customer, o.status, order_total(o.id) AS total
  FROM orders o JOIN customers c ON c.id = o.customer_id;
"""

# Measured per unit of ``scale`` (both databases): ~3.5 MB in InnoDB, ~3 MB of
# mariadb-dump --hex-blob output. ~500 MB is scale=145.
APPROX_BYTES_PER_SCALE = 3_500_000


def seed_mariadb(info: dict, scale: int = 1) -> dict:
    """Create and fill ``blog`` (wordpress-like) and ``shop``.

    ``scale`` multiplies row counts (about APPROX_BYTES_PER_SCALE bytes each).
    Returns {"databases": {db: {table: rows}}, "customers": CUSTOMERS}.
    """
    if scale < 1:
        raise ValueError("scale must be >= 1")
    blog = {"wp_users": 100 * scale, "wp_posts": 1000 * scale, "wp_comments": 5000 * scale,
            "wp_options": 4}
    nproducts, norders = 500 * scale, 3000 * scale
    shop = {"customers": len(CUSTOMERS) + 1000 * scale, "products": nproducts, "orders": norders,
            "order_items": 3 * norders}
    mariadb_sql(info, _BLOG_SQL.format(nusers=blog["wp_users"], nposts=blog["wp_posts"],
                                       ncomments=blog["wp_comments"]))
    customers = ", ".join("(" + ", ".join("'" + v.replace("'", "''") + "'" for v in row) + ")"
                          for row in CUSTOMERS)
    mariadb_sql(info, _SHOP_SQL.format(customers=customers, ncustomers=1000 * scale, nproducts=nproducts,
                                       norders=norders, nitems=shop["order_items"],
                                       blob=_blob_expr("seq", 1)))
    # two applications were installed: the accounts file, run again, lets `backup` read the view that
    # calls shop.order_total
    apply_accounts(info)
    return {"databases": {"blog": blog, "shop": shop}, "customers": CUSTOMERS}
