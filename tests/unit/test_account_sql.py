"""The database accounts' SQL: one file each, quoted verbatim by the guide and run as it is by the lab."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from restic_orch.lab import mariadb, postgres

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "getting-started.md"


def _section_3() -> str:
    text = GUIDE.read_text()
    return text[text.index("## 3. Database backup users"):text.index("## 4. ")]


@pytest.mark.parametrize("path", [postgres.ACCOUNTS_SQL, mariadb.ACCOUNTS_SQL], ids=["postgres", "mariadb"])
def test_the_guide_quotes_the_file_the_lab_runs(path):
    assert path.parent == ROOT / "docs" / "sql"
    blocks = re.findall(r"^```sql\n(.*?)^```$", _section_3(), re.S | re.M)
    assert path.read_text() in blocks, f"docs/getting-started.md section 3 does not quote {path.name} verbatim"


def test_no_password_and_no_superuser_in_the_files():
    pg = postgres.ACCOUNTS_SQL.read_text()
    assert ":'backup_password'" in pg and ":'restore_password'" in pg
    assert "NOSUPERUSER" in pg and not re.search(r"(?<!NO)SUPERUSER", pg)
    my = mariadb.ACCOUNTS_SQL.read_text()
    assert "@backup_password" in my and "@restore_password" in my
    for power in ("ALL PRIVILEGES ON", "SUPER,", "FILE,", "RELOAD", "PROCESS", "SHUTDOWN"):
        assert power not in my
    # the passwords come from variables set outside the file, never a literal in it
    assert pg.count("PASSWORD") == pg.count("PASSWORD :'")
    assert my.count("IDENTIFIED BY") == my.count("IDENTIFIED BY ', QUOTE(@") == 2
