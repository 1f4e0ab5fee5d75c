"""The ASGI handler the web server runs: Django's, with a request's sync work done in one hop to its thread.

Kept by hand for a measured reason (bench/asgi_handler.py and bench/request_path.py, quiet machine, 2026-12-01):
against Django's stock handler at equal settings it answers an authenticated GET 0.33 ms sooner at the median
(4.13 vs 4.46 ms), an API search 0.3–0.5 ms sooner, and serves 19% more GETs per second to 16 concurrent clients
(328 vs 276). Django's handler runs the middleware chain in async mode: each middleware that can only be sync
(WhiteNoise's, the project's) and each sync view is wrapped in its own thread hop, and the signals in more. Every
view here is sync and so is the middleware, so this handler runs in one hop to the request's thread: the
request_started signal, the whole chain as WSGI would, and for a response that is not streamed its close
(request_finished, which gives the database connection back before the bytes go out). Each request has a thread of
its own while it runs, as under Django's handler (a ``ThreadSensitiveContext`` per request), but the thread is one an
earlier request left idle: Django's handler starts a thread for each request and another to join it when it ends,
which cost an in-process API search 1.3 ms on a host with slow thread wake-ups (bench/request_path.py, (c-in) 4.34× →
3.93× the bare SQL, 2026-12-01).

Only reading the body and sending the response stay on the event loop; a streamed response (an answer, as an
async iterator) is sent while the client is watched for hanging up, as Django does, and closed after it. A body
past the upload limit is refused before it is read by core.uploads.BodyLimitMiddleware, around this handler.

Making the middleware async-capable instead would cost more: Django's own (MiddlewareMixin) middleware then runs
in async mode, with a thread hop for each of its process_request/process_response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import FileResponse
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]  # as django-stubs type ASGIHandler's
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

# Request threads kept idle for the next requests, at most: the concurrency a site usually sees. A burst past it
# starts threads of its own, which end with their request.
IDLE_THREADS = 64


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, doing a request's sync work in one hop to its thread (see the module)."""

    def __init__(self) -> None:
        BaseHandler.__init__(self)  # not ASGIHandler's: that one loads the middleware in async mode
        self.load_middleware(is_async=False)
        self._idle: list[ThreadPoolExecutor] = []  # one-thread executors of finished requests (IDLE_THREADS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # The request's thread: an idle one of an earlier request, or a new one. asgiref takes the executor a
        # ThreadSensitiveContext is given as the caller's, for one context at a time, and leaves it running.
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle) < IDLE_THREADS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)  # its thread ends once its work is done

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            if not response.streaming:
                await self.send_response(response, send)  # closed already, in the request's thread
                return
            sending = asyncio.ensure_future(self.send_response(response, send))
            listening = asyncio.ensure_future(self.listen_for_disconnect(receive))
            await asyncio.wait([sending, listening], return_when=asyncio.FIRST_COMPLETED)
            for task in (listening, sending):  # a client that hung up cancels the sending (and the answer)
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    await task
            await sync_to_async(self._close, thread_sensitive=True)(response)
        finally:
            body_file.close()

    def _respond(self, scope: Scope, body_file: IO[bytes]) -> HttpResponseBase:
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]  # as Django's; not in the stubs
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        assert response is not None  # create_request gives a request or the response that refuses it
        if not response.streaming:
            self._close(response)  # the connection goes back before the bytes are sent
        return response

    @staticmethod
    def _close(response: HttpResponseBase) -> None:
        """Close the response (request_finished) and the thread's database connections, as the end of a thread of
        its own did: the thread waits for another request, its connections not with it (with DATABASE_POOL they
        are back in the pool already; without, Django's persistent connections are not meant for ASGI)."""
        response.close()
        connections.close_all()
