"""Server-sent events: an answer's events, produced by sync code, streamed from either kind of server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

# The events of an answer: a generator, so that a client hanging up can close it (and the model's stream).
Events = Generator[str, None, None]


async def _in_request_thread(events: Events) -> AsyncIterator[str]:
    # thread_sensitive: every step runs in this request's one sync thread (where the view ran), so
    # the database connection the answer uses is the one Django closes when the response finishes;
    # between steps (while the model thinks) the stream holds no thread.
    step = sync_to_async(_next, thread_sensitive=True)
    try:
        while (chunk := await step(events)) is not None:
            yield chunk
    finally:  # a client that hangs up also ends the answer (and the model's stream)
        await sync_to_async(events.close, thread_sensitive=True)()


def _next(events: Events) -> str | None:
    return next(events, None)


def streamed(request: HttpRequest, events: Events) -> Events | AsyncIterator[str]:
    """``events`` in the kind of iterator this request's server consumes incrementally.

    Each server buffers the other kind whole: under ASGI an async iterator whose steps run in the
    request's thread, under WSGI the generator itself.
    """
    return _in_request_thread(events) if isinstance(request, ASGIRequest) else events


def sse_response(request: HttpRequest, events: Events) -> StreamingHttpResponse:
    """``events`` (already framed as ``data: ...\\n\\n``) as a ``text/event-stream`` no cache or proxy holds back."""
    response = StreamingHttpResponse(streamed(request, events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
