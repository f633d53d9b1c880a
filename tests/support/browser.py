"""Debian's Chromium for browser tests (Playwright drives it): where it is, and its flags.

TEST_BROWSER names the executable (`.ci/run` installs Debian's chromium and sets it); without
it, and without /usr/bin/chromium, a browser test is skipped with that reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("TEST_BROWSER") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip(f"no Chromium at {path} (set TEST_BROWSER; .ci/run installs Debian's chromium)")
    return path
