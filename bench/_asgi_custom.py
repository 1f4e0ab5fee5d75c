"""The peer of bench/asgi_handler.py: the project's former ASGI handler, kept here only to be measured.

A subclass of Django's ASGIHandler that re-implemented ``handle`` to run a request's sync work in one hop to
its thread, and refused a body past core.uploads.request_limit before reading it. The product now serves
Django's stock handler wrapped in core.uploads.BodyLimitMiddleware (ragsite/asgi.py).
"""

from __future__ import annotations

import asyncio
import contextlib

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

from core import uploads


class _TooLarge(Exception):
    def __init__(self, response: HttpResponse):
        self.response = response


class SyncMiddlewareASGIHandler(ASGIHandler):
    """Django's ASGI handler, doing a request's sync work in one hop to its thread.

    Django's own handler runs the middleware chain in async mode: every middleware that can only be
    sync (WhiteNoise's, these, ...) and every sync view is wrapped in its own thread hop. Every view
    here is sync and the middleware is too, so this handler runs, in one hop to the request's thread
    (thread-sensitive, as Django runs sync code under ASGI): the request_started signal, the whole
    chain as WSGI would, and for a response that is not streamed its close (request_finished, which
    gives the database connection back). Django's handler takes three hops for these (about 0.3 ms
    each on a busy 2-core machine: bench/search.py's (c0) floor). Only reading the body and sending the
    response stay on the event loop; a streamed response (an answer, as an async iterator) is sent
    while the client is watched for hanging up, as Django does, and closed after it.

    Making the middleware async-capable instead costs more: Django's own (MiddlewareMixin) middleware
    then runs in async mode, with a thread hop for each of its process_request/process_response.
    """

    def __init__(self):
        BaseHandler.__init__(self)  # not ASGIHandler's: that one loads the middleware in async mode
        self.load_middleware(is_async=False)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body_within_limit(scope, receive)
        except RequestAborted:
            return
        except _TooLarge as refused:
            await self.send_response(refused.response, send)  # the client may still be sending: not read
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
            await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    async def read_body_within_limit(self, scope, receive):
        """The body, as Django reads it, unless it cannot be a valid upload (core.uploads.request_limit).

        Django's handler spools the whole body to a temporary file before any upload handler sees it, so
        a request declaring too many bytes is refused before one is read, and one that passes the limit
        without declaring its length is refused as it does: never more than the limit lands on disk.
        """
        headers = dict(scope.get("headers") or [])
        path, accept = scope.get("path", ""), headers.get(b"accept", b"").decode("latin-1")
        limit = uploads.request_limit(path)
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise _TooLarge(await sync_to_async(uploads.too_large_response)(path, accept))
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge(await sync_to_async(uploads.too_large_response)(path, accept))
            return message

        return await self.read_body(counting_receive)

    def _respond(self, scope, body_file) -> HttpResponseBase:
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]  # as Django's; not in the stubs
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            response.close()  # request_finished: the connection goes back before the bytes are sent
        return response
