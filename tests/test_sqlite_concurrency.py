"""Several workers opening one SQLite file at the same instant (as `uvicorn --workers 4` does at
start-up): every one of them opens it, migrates it and writes to it, ten times over."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from townhall.db.sqlite import SQLiteFile
from townhall.records.outbox import OUTBOX_SCHEMA
from townhall.records.store import SQLITE_ADDED_COLUMNS, SQLITE_SCHEMA

WORKERS = 4
ROUNDS = 10


def _worker(path: str, barrier: multiprocessing.synchronize.Barrier, n: int) -> None:
    barrier.wait(timeout=30)  # all open at the same instant
    records = SQLiteFile(path, SQLITE_SCHEMA, added_columns=SQLITE_ADDED_COLUMNS)
    records._open()
    outbox = SQLiteFile(path, OUTBOX_SCHEMA, durable=True)
    outbox._open()
    assert records._conn is not None
    records._conn.execute(
        "INSERT INTO feedback (reference, session_id, dedupe_key, created_at, topic, summary,"
        " sentiment) VALUES (?, 's', ?, '2026-12-01', 't', 'summary', 'neutral')",
        (f"FB-{n:06d}", f"k{n}"),
    )


def test_four_workers_open_one_file_at_once_ten_times(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as a worker is
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"shared-{round_}.db")
        barrier = context.Barrier(WORKERS)
        workers = [
            context.Process(target=_worker, args=(path, barrier, round_ * 10 + n))
            for n in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [w.exitcode for w in workers] == [0] * WORKERS, f"round {round_}"
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM feedback").fetchone()[0] == WORKERS
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
