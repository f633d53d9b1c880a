"""Writes digital-town-hall.postman_collection.json (run: uv run python postman/build_collection.py).

The collection is generated so that its test scripts stay readable and consistent; the JSON it
writes is committed, and is what Postman and newman load.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
JSON_HEADERS = [{"key": "Content-Type", "value": "application/json"}]

SSE_ENDS_WELL = """
pm.test("streams Server-Sent Events", () => {
    pm.expect(pm.response.headers.get("Content-Type")).to.include("text/event-stream");
});
pm.test("the stream ends with data: [DONE]", () => {
    pm.expect(pm.response.text().endsWith("data: [DONE]\\n\\n")).to.be.true;
});
"""

CHATKIT_EVENTS = """
const events = pm.response.text().split("\\n\\n").filter(f => f.trim())
    .map(f => { pm.expect(f.startsWith("data: ")).to.be.true; return JSON.parse(f.slice(6)); });
"""


def request(name, method, path, body=None, tests="", headers=None, raw=None):
    item = {
        "name": name,
        "request": {
            "method": method,
            "header": headers
            if headers is not None
            else (JSON_HEADERS if body is not None or raw is not None else []),
            "url": {
                "raw": "{{baseUrl}}" + path,
                "host": ["{{baseUrl}}"],
                "path": [p for p in path.split("/") if p],
            },
        },
        "event": [
            {
                "listen": "test",
                "script": {"type": "text/javascript", "exec": tests.strip().splitlines()},
            }
        ],
    }
    if body is not None or raw is not None:
        item["request"]["body"] = {
            "mode": "raw",
            "raw": raw if raw is not None else json.dumps(body, indent=2),
        }
    return item


def status(code, text=""):
    return f'pm.test("status {code}", () => pm.response.to.have.status({code}));\n{text}'


def error_code(code):
    return f'pm.test("error code {code}", () => pm.expect(pm.response.json().error.code).to.eql("{code}"));\n'


service = [
    request(
        "Service info",
        "GET",
        "/",
        tests=status(
            200,
            """
const body = pm.response.json();
pm.test("service info", () => {
    pm.expect(body.status).to.eql("ok");
    pm.expect(body.service).to.eql("Digital Town Hall API");
    pm.expect(body).to.have.keys("status", "service", "version", "model", "model_mode", "notice", "records", "endpoints");
});
""",
        ),
    ),
    request(
        "Health",
        "GET",
        "/health",
        tests=status(
            200,
            """
const body = pm.response.json();
pm.test("healthy, with checks", () => {
    pm.expect(["healthy", "degraded"]).to.include(body.status);
    pm.expect(body.checks).to.have.property("model");
    pm.expect(body.checks).to.have.property("outbox");
});
""",
        ),
    ),
]

chat = [
    request(
        "First message (stream)",
        "POST",
        "/chat",
        {"message": "Hello from Postman"},
        status(
            200,
            SSE_ENDS_WELL
            + """
const sessionId = pm.response.headers.get("X-Session-Id");
pm.test("a new session id, first in the stream", () => {
    pm.expect(sessionId).to.match(/^[A-Za-z0-9_\\-.:]{16,128}$/);
    // Each frame carries its id (<turn>-<n>), the position GET /sessions/{id}/stream resumes from.
    pm.expect(pm.response.text().startsWith(`id: `)).to.be.true;
    pm.expect(pm.response.text().split("\\n").slice(0, 3).join("\\n")).to.match(/^id: [0-9]+-0\\nevent: session\\ndata: \\{"session_id":"[^"]+"\\}$/);
    pm.expect(pm.response.text()).to.include(`data: {"session_id":"${sessionId}"}`);
});
pm.collectionVariables.set("session_id", sessionId);
const ids = pm.response.text().split("\\n").filter(l => l.startsWith("id: "));
pm.collectionVariables.set("second_frame_id", ids[1].slice(4));
pm.collectionVariables.set("last_frame_id", ids[ids.length - 1].slice(4));
""",
        ),
    ),
    request(
        "Resume the stream after its second frame",
        "GET",
        "/sessions/{{session_id}}/stream",
        headers=[{"key": "Last-Event-ID", "value": "{{second_frame_id}}"}],
        tests=status(
            200,
            SSE_ENDS_WELL
            + """
pm.test("the frames after the second, from the third on", () => {
    pm.expect(pm.response.text().startsWith("id: " + pm.collectionVariables.get("second_frame_id").replace(/-1$/, "-2"))).to.be.true;
});
""",
        ),
    ),
    request(
        "Resume after the last frame: nothing more",
        "GET",
        "/sessions/{{session_id}}/stream",
        headers=[{"key": "Last-Event-ID", "value": "{{last_frame_id}}"}],
        tests=status(204, ""),
    ),
    request(
        "Second message, same session (JSON)",
        "POST",
        "/chat",
        {"message": "Second message", "session_id": "{{session_id}}", "stream": False},
        status(
            200,
            """
const body = pm.response.json();
pm.test("the same session continues", () => {
    pm.expect(body.session_id).to.eql(pm.collectionVariables.get("session_id"));
    pm.expect(body.reply).to.be.a("string");
    pm.expect(body.tool_calls).to.be.an("array");
    pm.expect(body.usage.requests).to.be.at.least(1);
});
""",
        ),
    ),
    request(
        "List sessions",
        "GET",
        "/sessions",
        tests=status(
            200,
            """
const body = pm.response.json();
pm.test("our session is listed with two turns", () => {
    const ours = body.sessions.find(s => s.session_id === pm.collectionVariables.get("session_id"));
    pm.expect(ours).to.be.an("object");
    pm.expect(ours.turns).to.eql(2);
    pm.expect(body.count).to.eql(body.sessions.length);
});
""",
        ),
    ),
    request(
        "Session history",
        "GET",
        "/sessions/{{session_id}}",
        tests=status(
            200,
            """
const body = pm.response.json();
pm.test("history has both turns as role/content messages", () => {
    pm.expect(body.messages.map(m => m.role)).to.eql(["user", "assistant", "user", "assistant"]);
    pm.expect(body.messages[0].content).to.eql("Hello from Postman");
    pm.expect(body.messages[2].content).to.eql("Second message");
});
""",
        ),
    ),
    request(
        "Malformed JSON is 400",
        "POST",
        "/chat",
        raw='{"message": ',
        tests=status(400, error_code("malformed_json")),
    ),
    request(
        "Blank message is 422",
        "POST",
        "/chat",
        {"message": "   "},
        status(422, error_code("invalid_request")),
    ),
    request(
        "Bad session id is 422",
        "POST",
        "/chat",
        {"message": "hi", "session_id": "not ok!"},
        status(422, error_code("invalid_request")),
    ),
    request(
        "Not JSON is 415",
        "POST",
        "/chat",
        raw="message=hi",
        headers=[{"key": "Content-Type", "value": "text/plain"}],
        tests=status(415, error_code("unsupported_media_type")),
    ),
    request(
        "Delete the session",
        "DELETE",
        "/sessions/{{session_id}}",
        tests=status(
            200,
            """
pm.test("deleted", () => pm.expect(pm.response.json().deleted).to.be.true);
""",
        ),
    ),
    request(
        "Deleted session is 404",
        "GET",
        "/sessions/{{session_id}}",
        tests=status(404, error_code("session_not_found")),
    ),
]

chatkit = [
    request(
        "Create a thread",
        "POST",
        "/chatkit",
        {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": "Hello from Postman via ChatKit"}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        },
        status(
            200,
            CHATKIT_EVENTS
            + """
pm.test("thread created, message answered", () => {
    pm.expect(events[0].type).to.eql("thread.created");
    const done = events.filter(e => e.type === "thread.item.done").map(e => e.item.type);
    pm.expect(done).to.include("user_message");
    pm.expect(done).to.include("assistant_message");
});
pm.collectionVariables.set("thread_id", events[0].thread.id);
""",
        ),
    ),
    request(
        "Second message in the thread",
        "POST",
        "/chatkit",
        {
            "type": "threads.add_user_message",
            "params": {
                "thread_id": "{{thread_id}}",
                "input": {
                    "content": [{"type": "input_text", "text": "And a second one"}],
                    "attachments": [],
                    "inference_options": {},
                },
            },
        },
        status(
            200,
            CHATKIT_EVENTS
            + """
pm.test("answered in the same thread", () => {
    const done = events.filter(e => e.type === "thread.item.done");
    pm.expect(done.every(e => e.item.thread_id === pm.collectionVariables.get("thread_id"))).to.be.true;
});
""",
        ),
    ),
    request(
        "Get the thread",
        "POST",
        "/chatkit",
        {"type": "threads.get_by_id", "params": {"thread_id": "{{thread_id}}"}},
        status(
            200,
            """
const body = pm.response.json();
pm.test("thread with four items and a title", () => {
    pm.expect(body.id).to.eql(pm.collectionVariables.get("thread_id"));
    pm.expect(body.title).to.eql("Hello from Postman via ChatKit");
    pm.expect(body.items.data.length).to.eql(4);
});
""",
        ),
    ),
    request(
        "List items",
        "POST",
        "/chatkit",
        {"type": "items.list", "params": {"thread_id": "{{thread_id}}", "order": "asc"}},
        status(
            200,
            """
const body = pm.response.json();
pm.test("a page of items", () => {
    pm.expect(body.data.map(i => i.type)).to.eql(["user_message", "assistant_message", "user_message", "assistant_message"]);
    pm.expect(body.has_more).to.be.false;
});
""",
        ),
    ),
    request(
        "List threads",
        "POST",
        "/chatkit",
        {"type": "threads.list", "params": {"limit": 50}},
        status(
            200,
            """
pm.test("our thread is listed", () => {
    pm.expect(pm.response.json().data.map(t => t.id)).to.include(pm.collectionVariables.get("thread_id"));
});
""",
        ),
    ),
    request(
        "Unknown thread is 404",
        "POST",
        "/chatkit",
        {"type": "threads.get_by_id", "params": {"thread_id": "thr_nope"}},
        status(404, error_code("thread_not_found")),
    ),
    request(
        "Invalid ChatKit request is 400",
        "POST",
        "/chatkit",
        {"type": "threads.explode", "params": {}},
        status(400, error_code("invalid_chatkit_request")),
    ),
    request(
        "Delete the thread",
        "POST",
        "/chatkit",
        {"type": "threads.delete", "params": {"thread_id": "{{thread_id}}"}},
        status(200, 'pm.test("empty reply", () => pm.expect(pm.response.json()).to.eql({}));'),
    ),
    request(
        "Hosted ChatKit session (503 unless configured)",
        "POST",
        "/api/chatkit/session",
        {},
        status(503, error_code("chatkit_not_configured")),
    ),
]

front_ends = [
    request(
        "Streamlit: ask, whole answer",
        "POST",
        "/query",
        {"prompt": "Hello from Streamlit"},
        status(
            200,
            """
const body = pm.response.json();
pm.test("model, answer and session", () => {
    pm.expect(body.model).to.eql("echo");
    pm.expect(body.answer).to.eql("Hello from Streamlit");
    pm.expect(body.session_id).to.be.a("string");
});
pm.collectionVariables.set("query_session", body.session_id);
""",
        ),
    ),
    request(
        "Streamlit: ask, streamed lines",
        "POST",
        "/query/stream",
        {"prompt": "streamed words", "session_id": "{{query_session}}"},
        status(
            200,
            """
pm.test("data: lines with the text", () => {
    const lines = pm.response.text().split("\\n").filter(l => l);
    pm.expect(lines).to.eql(["data: streamed", "data: words"]);
});
pm.test("the same conversation", () => {
    pm.expect(pm.response.headers.get("X-Session-Id")).to.eql(pm.collectionVariables.get("query_session"));
});
""",
        ),
    ),
    request(
        "Streamlit: a blank prompt is refused",
        "POST",
        "/query",
        {"prompt": "   "},
        status(422, error_code("invalid_request")),
    ),
    request(
        "Assistants stream: a run as NDJSON",
        "POST",
        "/chat/stream",
        {"content": "Hello assistant"},
        status(
            200,
            """
const events = pm.response.text().split("\\n").filter(l => l.trim()).map(l => JSON.parse(l));
pm.test("NDJSON", () => pm.expect(pm.response.headers.get("Content-Type")).to.include("application/x-ndjson"));
pm.test("a run from created to completed", () => {
    pm.expect(events[0].event).to.eql("thread.run.created");
    pm.expect(events[events.length - 1].event).to.eql("thread.run.completed");
    pm.expect(events.map(e => e.event)).to.include("thread.message.delta");
});
pm.test("the thread is returned", () => {
    pm.expect(pm.response.headers.get("X-Thread-Id")).to.eql(events[0].data.thread_id);
});
""",
        ),
    ),
    request(
        "AI SDK useChat: the UI message stream",
        "POST",
        "/api/chat",
        {
            "id": "postman-chat",
            "messages": [
                {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello useChat"}]}
            ],
            "trigger": "submit-message",
        },
        status(
            200,
            SSE_ENDS_WELL
            + """
pm.test("UI message stream v1", () => pm.expect(pm.response.headers.get("x-vercel-ai-ui-message-stream")).to.eql("v1"));
const chunks = pm.response.text().split("\\n\\n").filter(f => f.startsWith("data: {")).map(f => JSON.parse(f.slice(6)));
pm.test("start, text, finish", () => {
    const types = chunks.map(c => c.type);
    pm.expect(types[0]).to.eql("start");
    pm.expect(types).to.include("text-delta");
    pm.expect(types[types.length - 1]).to.eql("finish");
});
""",
        ),
    ),
]

collection = {
    "info": {
        "name": "Digital Town Hall API",
        "description": "Every endpoint of the Digital Town Hall API, with tests. Run it against a server in echo mode:\n"
        "uv run uvicorn api:app --port 8000, then newman run postman/digital-town-hall.postman_collection.json "
        "-e postman/digital-town-hall.postman_environment.json",
        "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
    },
    "item": [
        {"name": "Service", "item": service},
        {"name": "Chat", "item": chat},
        {"name": "ChatKit", "item": chatkit},
        {"name": "Front ends", "item": front_ends},
    ],
    "variable": [
        {"key": "session_id", "value": ""},
        {"key": "thread_id", "value": ""},
        {"key": "query_session", "value": ""},
    ],
}

environment = {
    "name": "Digital Town Hall (local)",
    "values": [
        {"key": "baseUrl", "value": "http://localhost:8000", "type": "default", "enabled": True}
    ],
}

if __name__ == "__main__":
    (HERE / "digital-town-hall.postman_collection.json").write_text(
        json.dumps(collection, indent=2) + "\n"
    )
    (HERE / "digital-town-hall.postman_environment.json").write_text(
        json.dumps(environment, indent=2) + "\n"
    )
