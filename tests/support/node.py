"""Running the npm client libraries' scripts in tests/node (the real `ai` and `openai` packages)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPTS = ROOT / "tests" / "node"


async def node(script: str, *args: str, **env: str) -> dict[str, Any]:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "ai").is_dir():
        pytest.skip("needs node and the npm packages: run `npm ci` (.ci/run does)")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_SCRIPTS / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result
