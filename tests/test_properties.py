"""Property tests (hypothesis): the SSE encoder round-trips any text through a standard parser, and
the request model accepts exactly the documented inputs."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.support.frames import parse_sse as parse
from townhall.http.schemas import SESSION_ID_PATTERN, ChatRequest
from townhall.protocols.sse import DONE_FRAME, encode_event, encode_text

SESSION_ID = re.compile(SESSION_ID_PATTERN)


def normalise(text: str) -> str:
    """What SSE can carry: every line break arrives as LF."""
    return re.sub(r"\r\n|\r", "\n", text)


@settings(max_examples=500)
@given(st.lists(st.text(), max_size=8))
def test_any_deltas_round_trip_and_never_end_the_stream_early(deltas: list[str]) -> None:
    stream = b"".join(encode_text(delta) for delta in deltas) + DONE_FRAME
    events = parse(stream)
    assert events[-1] == ("message", "[DONE]")
    body = events[:-1]
    assert all(event == "message" for event, _ in body)
    assert ("message", "[DONE]") not in body  # a delta reading [DONE] never ends the stream
    assert "".join(data for _, data in body) == "".join(normalise(d) for d in deltas)


@settings(max_examples=300)
@given(st.text(), st.dictionaries(st.text(max_size=10), st.text() | st.integers() | st.none()))
def test_named_events_carry_any_json_on_one_line(
    name_seed: str, payload: dict[str, object]
) -> None:
    name = "tool_result"
    frame = encode_event(name, {"output": payload, "note": name_seed})
    assert frame.count(b"\n") == 3  # event line, one data line, blank line
    [(event, data)] = parse(frame)
    assert event == name
    assert json.loads(data) == {"output": payload, "note": name_seed}


@given(st.text(), st.one_of(st.none(), st.text(max_size=200)))
def test_chat_request_accepts_exactly_the_documented_inputs(
    message: str, session_id: str | None
) -> None:
    valid = bool(message.strip()) and (session_id is None or bool(SESSION_ID.fullmatch(session_id)))
    try:
        parsed = ChatRequest(message=message, session_id=session_id)
    except ValidationError as error:
        assert not valid, error
        fields = {str(problem["loc"][0]) for problem in error.errors()}
        assert fields <= {"message", "session_id"}
    else:
        assert valid
        assert (parsed.message, parsed.session_id, parsed.stream) == (message, session_id, True)


@given(st.from_regex(SESSION_ID_PATTERN, fullmatch=True))
def test_every_id_matching_the_pattern_is_accepted(session_id: str) -> None:
    assert ChatRequest(message="hi", session_id=session_id).session_id == session_id
