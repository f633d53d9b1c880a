"""A local stand-in for a Supabase project's PostgREST API, as an ASGI app.

It checks what the `supabase` client sends (paths, `apikey` and `Authorization` headers, the
`Prefer` header and `on_conflict`), keeps rows in memory with the unique constraints of
schema.sql, answers as PostgREST does, and can be told to fail with a status or to hang.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from townhall.records.model import TABLES

UNIQUE_COLUMNS = ("reference", "dedupe_key")


@dataclass
class PostgRESTDouble:
    service_key: str
    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {table: [] for table in TABLES}
    )
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_status: int | None = None
    hang: bool = False  # hold every request until release()
    hang_after_insert: bool = False  # write the row, then hold the answer until release()
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/rest/v1/{table}", self._endpoint, methods=["GET", "POST"])]
        )

    def release(self) -> None:
        """Let hanging requests fail (so a test's server can shut down)."""
        self._released.set()

    async def _endpoint(self, request: Request) -> Response:
        table = request.path_params["table"]
        body = await request.body()
        self.requests.append(
            {
                "method": request.method,
                "table": table,
                "params": dict(request.query_params),
                "prefer": request.headers.get("prefer", ""),
                "body": json.loads(body) if body else None,
            }
        )
        if (problem := self._auth_problem(request)) is not None:
            return problem
        if self.hang:
            await self._released.wait()
            return _error(503, "PGRST000", "released after hanging")
        if self.fail_status is not None:
            return _error(self.fail_status, "PGRST000", "injected failure")
        if table not in self.rows:
            return _error(404, "42P01", f'relation "public.{table}" does not exist')
        if request.method == "POST":
            response = self._insert(request, table, json.loads(body))
            if self.hang_after_insert:
                await self._released.wait()
            return response
        return self._select(request, table)

    def _auth_problem(self, request: Request) -> Response | None:
        if request.headers.get("apikey") != self.service_key:
            return _error(401, "PGRST301", "No API key found in request", status_text="apikey")
        if request.headers.get("authorization") != f"Bearer {self.service_key}":
            return _error(401, "PGRST301", "JWT missing or invalid")
        return None

    def _insert(self, request: Request, table: str, payload: Any) -> Response:
        prefer = {p.strip() for p in request.headers.get("prefer", "").split(",") if p.strip()}
        on_conflict = request.query_params.get("on_conflict")
        new_rows = payload if isinstance(payload, list) else [payload]
        columns = set(TABLES[table].columns())
        inserted = []
        for row in new_rows:
            unknown = set(row) - columns
            if unknown:
                return _error(400, "PGRST204", f"Could not find the '{sorted(unknown)[0]}' column")
            clashes = self._clashes(table, row)
            # As in PostgreSQL's ON CONFLICT (col) DO NOTHING: a clash on the arbiter column is
            # ignored; a clash on any other unique column is an error.
            arbiter = on_conflict or "reference"
            if "resolution=ignore-duplicates" in prefer and arbiter in clashes:
                continue
            if clashes:
                column = sorted(clashes)[0]
                return _error(409, "23505", f'duplicate key value violates "{table}_{column}_key"')
            self.rows[table].append(dict(row))
            inserted.append(dict(row))
        if "return=minimal" in prefer:
            return Response(status_code=201)
        return JSONResponse(inserted, status_code=201)

    def _clashes(self, table: str, row: dict[str, Any]) -> set[str]:
        return {
            column
            for column in UNIQUE_COLUMNS
            if any(existing[column] == row.get(column) for existing in self.rows[table])
        }

    def _select(self, request: Request, table: str) -> Response:
        rows = self.rows[table]
        for column, condition in request.query_params.items():
            if column in {"select", "limit", "order", "offset"}:
                continue
            op, _, value = condition.partition(".")
            if op != "eq":
                return _error(400, "PGRST100", f"unsupported operator {op}")
            rows = [row for row in rows if str(row.get(column)) == value]
        if "limit" in request.query_params:
            rows = rows[: int(request.query_params["limit"])]
        selected = request.query_params.get("select", "*")
        if selected != "*":
            wanted = selected.split(",")
            rows = [{k: row.get(k) for k in wanted} for row in rows]
        return JSONResponse(rows)

    def count(self, table: str) -> int:
        return len(self.rows[table])


def _error(status: int, code: str, message: str, status_text: str = "") -> Response:
    body = {"code": code, "details": None, "hint": status_text or None, "message": message}
    return JSONResponse(body, status_code=status)
