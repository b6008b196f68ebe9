"""Server-sent events as OpenAI streams them: `data: {json}` lines, an error as `data: {"error": ...}`, and a final
`data: [DONE]`.

Generation is blocking (a model forward per token), so the events come from a plain generator pulled one event at
a time in a worker thread. However the response ends (finished, client gone, server stopping), that generator is
closed, which stops the generation thread at its next token and releases the model for the next request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import anyio
from fastapi.responses import StreamingResponse

DONE = "data: [DONE]\n\n"
_END = object()


def event(data: str) -> str:
    return f"data: {data}\n\n"


def error_event(body: dict) -> str:
    return event(json.dumps(body, ensure_ascii=False))


def sse_response(events: Iterator[str]) -> StreamingResponse:
    return StreamingResponse(_pull(events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _pull(events: Iterator[str]) -> AsyncIterator[str]:
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, events, _END)
            if item is _END:
                return
            yield item
    finally:
        with anyio.CancelScope(shield=True):  # also when the response was cancelled (client gone)
            await anyio.to_thread.run_sync(events.close)
