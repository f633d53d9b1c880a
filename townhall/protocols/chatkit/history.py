"""ChatKit thread items as Agents SDK input that both wire APIs accept."""

from __future__ import annotations

from agents import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.types import AssistantMessageItem
from openai.types.responses import EasyInputMessageParam


class HistoryConverter(ThreadItemConverter):
    """Thread items as agent input that both wire APIs accept.

    ChatKit replays an assistant message as `{"type": "message", "role": "assistant",
    "content": [{"type": "output_text", ...}]}`: an easy input message (no `id`, no `status`)
    with output parts. The Chat Completions converter takes such a message as easy input and
    accepts only input parts in it (`UserError: Unknown content`). Plain text content is valid
    for an assistant message on the Responses API and Chat Completions alike.
    """

    async def assistant_message_to_input(self, item: AssistantMessageItem) -> TResponseInputItem:
        return EasyInputMessageParam(
            type="message", role="assistant", content="\n".join(part.text for part in item.content)
        )
