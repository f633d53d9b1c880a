from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _run_in_a_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default SQLite record store and outbox are relative paths: keep them out of the repo."""
    monkeypatch.chdir(tmp_path)
