"""What this service says about itself: its name, version, endpoints, and the echo notice."""

from __future__ import annotations

import tomllib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAME = "Digital Town Hall API"
VERSION = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
ECHO_NOTICE = (
    "Echo mode: no model is configured, so replies repeat your message word by word. "
    "Set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL and MODEL (an OpenAI-compatible server) "
    "and restart to talk to a real model."
)
ENDPOINTS = {
    "chat": "POST /chat",
    "chatkit": "POST /chatkit",
    "chatkit_hosted_session": "POST /api/chatkit/session",
    "sessions": "GET /sessions",
    "session": "GET|DELETE /sessions/{session_id}",
    "resume": "GET /sessions/{session_id}/stream (Last-Event-ID)",
    "dead_letters": "GET /admin/dead-letters (admin key)",
    "health": "GET /health",
    "demo": "GET /demo",
    "docs": "GET /docs",
}
