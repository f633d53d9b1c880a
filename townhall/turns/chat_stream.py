"""ChatCmplStreamHandler.handle_stream's logic, fed chunk dicts, with text kept linear.

The SDK's handler grows the answer with `part.text += delta` on a pydantic model (quadratic in
the answer's length) and reads chunks the openai client built. LeanChatStream reads the chunk
dicts of chat_chunks, keeps text as a list of pieces joined once, and merges the text deltas of
one network read into one event. It handles text, refusals, function tool calls, usage and finish
reasons; a stream that uses more before any output was emitted raises NeedsFullHandler, so the
caller can hand it to the SDK's handler (chat_compat).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from agents.exceptions import AgentsException, ModelBehaviorError, UserError
from agents.items import TResponseStreamEvent
from agents.models.chatcmpl_helpers import ChatCmplHelpers
from agents.models.chatcmpl_stream_handler import ChatCmplStreamHandler, _StreamOutputLayout
from agents.usage import _mark_request_completed_without_usage
from openai._models import construct_type
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
)

from townhall.turns.chat_events import ChatEvents, call_item, empty_text, message_item

logger = logging.getLogger(__name__)

CONTENT_FILTERED = "Response withheld by the provider's content filter."


class NeedsFullHandler(Exception):
    """The stream uses something only the SDK's handler does, and nothing was emitted yet."""


class _Call:
    """A function tool call being streamed; its arguments kept as parts."""

    __slots__ = ("call_id", "name", "parts", "provider_data", "streaming")

    def __init__(self) -> None:
        self.call_id = ""
        self.name = ""
        self.parts: list[str] = []
        self.provider_data: dict[str, Any] | None = None
        self.streaming = False


class LeanChatStream:
    """Events accumulate in `out` as chunks are fed; `take` hands them over. Each method mirrors
    the handler's branch for it."""

    def __init__(
        self,
        response: Response,
        *,
        model: str | None,
        strict_feature_validation: bool = False,
        raise_on_length_truncation: bool = False,
        require_finish_reason: bool = False,
    ) -> None:
        self.response = response
        self.model = model
        self.strict = strict_feature_validation
        self.raise_on_length_truncation = raise_on_length_truncation
        self.require_finish_reason = require_finish_reason
        self.make = ChatEvents()
        self.out: list[TResponseStreamEvent] = []
        self.emitted_output = False  # anything beyond response.created
        self.seen: list[dict[str, Any]] | None = []  # chunks fed before any output, for replay
        self.usage: Any = None
        self.provider_data: dict[str, Any] = {}
        self.calls: dict[int, _Call] = {}
        self.ignored_call_indexes: set[int] = set()
        # The SDK's layout class reads only these two attributes of its state.
        self.layout_state = SimpleNamespace(
            reasoning_content_index_and_output=None, function_calls=self.calls
        )
        self.layout = _StreamOutputLayout()
        self.text_index: int | None = None
        self.text_parts: list[str] = []
        self.pending_text: list[str] = []
        self.refusal_index: int | None = None
        self.refusal_parts: list[str] = []
        self.started = False
        self.saw_content_filter = self.saw_length = self.saw_finish_reason = False
        self.warned_choices = self.warned_ignored = False

    def take(self) -> list[TResponseStreamEvent]:
        events, self.out = self.out, []
        return events

    def _emit(self, build: Callable[..., Any], *args: Any) -> None:
        # Pending text goes first, and the event is numbered only after it, so sequence
        # numbers stay in the order the events are sent.
        if self.pending_text:
            self.flush_text()
        self.out.append(build(*args))
        self.emitted_output = True

    def flush_text(self) -> None:
        """Emit the text deltas gathered since the last event as one delta."""
        delta = self.pending_text[0] if len(self.pending_text) == 1 else "".join(self.pending_text)
        self.pending_text.clear()
        # The part keeps the merged delta, the same string the event (and the turn) holds, so a
        # long answer is held once, not as pieces plus merged copies.
        self.text_parts.append(delta)
        index = cast(int, self.text_index)
        self.out.append(self.make.text_delta(index, self._message_index(), delta))
        self.emitted_output = True

    def _message_index(self) -> int:
        return self.layout.assistant_message_output_index(cast(Any, self.layout_state))

    def _call_index(self, index: int) -> int:
        return self.layout.function_call_output_index(cast(Any, self.layout_state), index)

    def _unsupported(self, what: str) -> None:
        if not self.emitted_output:
            raise NeedsFullHandler(what)
        if not self.warned_ignored:
            logger.warning(
                "lean chat stream: ignoring %s that arrived after the output began", what
            )
            self.warned_ignored = True

    # --- a chunk ------------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> None:
        if self.seen is not None:
            if self.emitted_output:
                self.seen = None
            else:
                self.seen.append(chunk)
        if not self.started:
            self.started = True
            self.out.append(self.make.created(self.response))
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return
        if len(choices) > 1 or any(c.get("index") != 0 for c in choices):
            self._warn_choices()
        choice = next((c for c in choices if c.get("index") == 0), None)
        if choice is None:
            return
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            self.saw_finish_reason = True
        if finish_reason == "content_filter":
            self.saw_content_filter = True
        elif finish_reason == "length":
            self.saw_length = True
        delta = choice.get("delta")
        if not isinstance(delta, dict):  # absent or null: the handler skips the chunk
            return
        if self.model:
            self.provider_data["model"] = self.model
        elif chunk.get("model"):
            self.provider_data["model"] = chunk["model"]
        if chunk.get("id"):
            self.provider_data["response_id"] = chunk["id"]
        if delta.get("audio"):
            raise AgentsException("Audio is not currently supported")
        for key in ("reasoning_content", "reasoning", "thinking_blocks"):
            if delta.get(key):
                self._unsupported(key)
        logprobs = choice.get("logprobs")
        if logprobs and logprobs.get("content"):
            self._unsupported("logprobs")
        if delta.get("annotations") and ChatCmplHelpers.convert_url_citations(delta["annotations"]):
            self._unsupported("annotations")
        content = delta.get("content")
        if content is not None:
            if not isinstance(content, str):
                self._unsupported("non-text content")
            elif content or self.text_index is not None:
                self._text(content)
        refusal = delta.get("refusal")
        if refusal:
            self._refusal(refusal)
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            for tool_call in tool_calls:
                self._tool_call(tool_call)

    def _warn_choices(self) -> None:
        message = (
            "Chat Completions streaming with multiple choices or nonzero choice indexes "
            "is not fully supported; only choice index 0 can be processed."
        )
        if self.strict:
            raise UserError(message)
        if not self.warned_choices:
            logger.warning(
                "%s Ignoring the other choices; enable strict feature validation to "
                "raise an error instead.",
                message,
            )
            self.warned_choices = True

    def _message_item(self, status: str) -> ResponseOutputMessage:
        return message_item(status, self.provider_data)

    def _open_part(
        self, content_index: int, part: ResponseOutputText | ResponseOutputRefusal
    ) -> None:
        """The message's added event (for its first part) and the part's added event."""
        if content_index == 0:
            self._emit(
                self.make.item_added, self._message_item("in_progress"), self._message_index()
            )
        self._emit(self.make.part_added, content_index, self._message_index(), part)

    def _text(self, content: str) -> None:
        if self.text_index is None:
            self.text_index = 1 if self.refusal_index is not None else 0
            self._open_part(self.text_index, empty_text())
        self.pending_text.append(content)

    def _refusal(self, refusal: str) -> None:
        if self.refusal_index is None:
            self.refusal_index = 1 if self.text_index is not None else 0
            self._open_part(self.refusal_index, ResponseOutputRefusal(refusal="", type="refusal"))
        self._emit(self.make.refusal_delta, self.refusal_index, self._message_index(), refusal)
        self.refusal_parts.append(refusal)

    def _tool_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index")
        if index in self.ignored_call_indexes:
            return
        if delta.get("type") == "custom":
            if self.strict:
                raise UserError(
                    "Custom tool calls are not supported by the Chat Completions converter"
                )
            self.ignored_call_indexes.add(cast(int, index))
            return
        call = self.calls.get(cast(int, index))
        if call is None:
            call = self.calls[cast(int, index)] = _Call()
        function = delta.get("function") or {}
        arguments = function.get("arguments")
        if arguments:
            call.parts.append(arguments)
        if function.get("name"):
            call.name = function["name"]
        if delta.get("id"):
            call.call_id = ChatCmplHelpers.clean_gemini_tool_call_id(delta["id"], self.model)
        if call.provider_data is None and self.provider_data:
            call.provider_data = self.provider_data.copy()
        signature = None
        fields = delta.get("provider_specific_fields")
        if fields and self.model and "gemini" in self.model.lower() and isinstance(fields, dict):
            signature = fields.get("thought_signature")
        extra = delta.get("extra_content")
        if extra and isinstance(extra, dict) and isinstance(extra.get("google"), dict):
            signature = extra["google"].get("thought_signature") or signature
        if signature:
            call.provider_data = {**self.provider_data, "thought_signature": signature}
        if not call.streaming and call.name and call.call_id:
            call.streaming = True
            output_index = self._call_index(cast(int, index))
            self._emit(self.make.item_added, self._call_item(call, ""), output_index)
        if call.streaming and arguments:
            output_index = self._call_index(cast(int, index))
            self._emit(self.make.arguments_delta, output_index, arguments)

    def _call_item(self, call: _Call, arguments: str) -> ResponseFunctionToolCall:
        provider_data = None
        if self.provider_data or call.provider_data:
            provider_data = {**self.provider_data, **(call.provider_data or {})}
        return call_item(call.call_id, call.name, arguments, provider_data)

    def _state_call(self, call: _Call) -> ResponseFunctionToolCall:
        """The call as the handler's state holds it (what response.completed's output carries)."""
        item = call_item(call.call_id, call.name, "".join(call.parts), None)
        if call.provider_data is not None:
            item.provider_data = call.provider_data  # type: ignore[attr-defined]
        return item

    def _usage(self) -> Any:
        if self.usage is None:
            return None
        usage = construct_type(type_=CompletionUsage, value=self.usage)
        return ChatCmplStreamHandler._build_response_usage(cast(CompletionUsage, usage))

    # --- the end ------------------------------------------------------------------------------

    def finish(self) -> None:
        """The handler's end of stream: its checks, then the done events and response.completed."""
        if self.pending_text:
            self.flush_text()
        nothing = self.text_index is None and self.refusal_index is None and not self.calls
        if self.saw_content_filter and nothing:
            self.refusal_index = 0
            self.refusal_parts = [CONTENT_FILTERED]
            self._open_part(0, ResponseOutputRefusal(refusal="", type="refusal"))
            self._emit(self.make.refusal_delta, 0, self._message_index(), CONTENT_FILTERED)
            nothing = False
        self._check_the_end(nothing)
        parts = self._close_parts()
        self._close_calls()
        self._complete(parts)

    def _check_the_end(self, nothing: bool) -> None:
        """The handler's terminal checks: a missing finish reason, or truncated to nothing."""
        missing_finish = self.require_finish_reason and not self.saw_finish_reason
        if not missing_finish and not (
            self.saw_length and self.raise_on_length_truncation and nothing
        ):
            return
        usage = self._usage()
        if usage is not None:
            self.response.usage = usage
        else:
            _mark_request_completed_without_usage(self.response)
        if missing_finish:
            raise ModelBehaviorError(
                "Chat Completions stream ended before receiving a finish_reason for choice 0."
            )
        raise ModelBehaviorError(
            "Chat Completions stream terminated with finish_reason='length' "
            "but produced no assistant text, tool call, or refusal."
        )

    def _close_parts(self) -> list[tuple[int, Any]]:
        parts: list[tuple[int, Any]] = []
        if self.text_index is not None:
            text = ResponseOutputText(
                text="".join(self.text_parts), type="output_text", annotations=[], logprobs=[]
            )
            self.text_parts = []
            parts.append((self.text_index, text))
            self._emit(self.make.part_done, self.text_index, self._message_index(), text)
        if self.refusal_index is not None:
            refusal = ResponseOutputRefusal(refusal="".join(self.refusal_parts), type="refusal")
            parts.append((self.refusal_index, refusal))
            self._emit(self.make.part_done, self.refusal_index, self._message_index(), refusal)
        return parts

    def _close_calls(self) -> None:
        for index, call in self.calls.items():
            output_index = self._call_index(index)
            arguments = "".join(call.parts)
            item = self._call_item(call, arguments)
            if not call.streaming:  # the name or id never came: all three events at once
                self._emit(self.make.item_added, item, output_index)
                self._emit(self.make.arguments_delta, output_index, arguments)
            self._emit(self.make.item_done, item, output_index)

    def _complete(self, parts: list[tuple[int, Any]]) -> None:
        state_calls = {index: self._state_call(call) for index, call in self.calls.items()}
        before = self.layout.function_calls_before_message(cast(Any, self.layout_state))
        after = self.layout.function_calls_after_message(cast(Any, self.layout_state))
        by_id = {id(call): index for index, call in self.calls.items()}
        outputs: list[Any] = [state_calls[by_id[id(call)]] for call in before]
        if parts:
            done_message = self._message_item("completed")
            parts.sort(key=lambda entry: entry[0])
            done_message.content.extend(part for _, part in parts)
            outputs.append(done_message)
            self._emit(self.make.item_done, done_message, self._message_index())
        outputs.extend(state_calls[by_id[id(call)]] for call in after)
        final = self.response.model_copy()
        final.output = outputs
        final.usage = self._usage()
        if self.usage is None:
            _mark_request_completed_without_usage(final)
        self._emit(self.make.completed, final)
