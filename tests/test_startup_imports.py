"""The default server (sessions in memory, records in SQLite) does not load the Redis and
SQLAlchemy clients it does not use (~0.75 s of every start-up), and counts their errors as
outages once a store that uses them has loaded them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import PROJECT, clean_env

CHECK = """
import sys
import api
from townhall.errors import outage_errors
loaded = sorted(m for m in ("redis", "sqlalchemy") if m in sys.modules)
import redis.exceptions, sqlalchemy.exc
names = {e.__name__ for e in outage_errors() if e.__module__.startswith(("redis", "sqlalchemy"))}
print(loaded, sorted(names))
"""


def test_the_default_server_does_not_load_redis_or_sqlalchemy(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=PROJECT,
        env=clean_env(
            DATABASE_URL=f"sqlite:///{tmp_path}/r.db", OUTBOX_PATH=str(tmp_path / "o.db")
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert out == "[] ['ConnectionError', 'InterfaceError', 'OperationalError', 'TimeoutError']"
