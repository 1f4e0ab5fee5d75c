"""The ASGI entry point `make run` and compose serve (ragsite.asgi.application), driven with raw ASGI messages.

Django's test clients bring their own handler; these tests speak the protocol to ours (core.asgi.OneHopASGIHandler
inside core.uploads.BodyLimitMiddleware), as uvicorn does: a request's sync work in one hop (its database
connection given back before the bytes are sent), streamed answers cut short when the client hangs up, and bodies
that cannot be a valid upload refused before they are stored.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from django.core import signals

from core.models import ApiToken
from ragsite.asgi import application
from tests.chat.test_openai_api import handbook, openai_llm  # noqa: F401  (fixtures)


def run(scope: dict, receive, on_send=None, timeout: float = 60) -> list[dict]:
    """Run the application for one request in a loop of its own (another thread); the messages it sent."""
    sent: list[dict] = []

    async def send(message):
        sent.append(message)
        if on_send is not None:
            on_send(message)

    async def main():
        await asyncio.wait_for(application(scope, receive, send), timeout)

    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(main, failure))
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return sent


def _run_catching(main, failure: list) -> None:
    try:
        asyncio.run(main())
    except BaseException as error:  # re-raised in the test's thread
        failure.append(error)


def http_scope(method: str, path: str, headers: dict[str, str], query: str = "") -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "localhost", **headers}.items()],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }


def request_body(body: bytes):
    """A server's ``receive``: the whole body at once, then (as uvicorn does) nothing until the client leaves."""
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive():
        message = next(messages, None)
        if message is None:  # Django listens for a disconnect while it answers: the client stays
            await asyncio.Event().wait()
        return message

    return receive


def body_of(sent: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def trace():
    """The order of request_started, request_finished and the messages sent, as they happened."""
    events: list[str] = []

    def started(**kwargs):
        events.append("started")

    def finished(**kwargs):
        events.append("finished")

    signals.request_started.connect(started, weak=False)
    signals.request_finished.connect(finished, weak=False)
    yield events
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def test_a_response_gives_its_database_connection_back_before_it_is_sent(transactional_db, user, trace):
    token = ApiToken.issue(user=user)[1]
    receive = request_body(b"")

    scope = http_scope("GET", "/api/v1/documents", {"authorization": f"Bearer {token}"})
    sent = run(scope, receive, on_send=lambda message: trace.append(message["type"]))
    assert sent[0]["status"] == 200 and json.loads(body_of(sent)) == []
    # request_finished (close_old_connections: the connection goes back to the pool) ran once, in the request's one
    # hop, before the first byte went out.
    assert trace[:3] == ["started", "finished", "http.response.start"] and trace.count("finished") == 1


def test_a_declared_oversized_upload_is_refused_before_its_body_is_read(transactional_db, user, settings):
    settings.MAX_UPLOAD_BYTES = 1024 * 1024
    token = ApiToken.issue(user=user)[1]
    reads = []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    scope = http_scope("POST", "/api/v1/documents", {
        "authorization": f"Bearer {token}", "content-type": "multipart/form-data; boundary=x",
        "content-length": str(50 * 1024 * 1024),
    })
    sent = run(scope, receive)
    assert sent[0]["status"] == 413
    assert "larger than the limit of 1.0 MB" in json.loads(body_of(sent))["detail"]
    assert reads == []  # not one byte of it was read, let alone stored


def test_an_undeclared_body_is_refused_once_it_passes_the_limit(transactional_db, user, settings):
    settings.MAX_UPLOAD_BYTES = 1024 * 1024
    chunk = b"x" * (256 * 1024)
    reads = []

    async def receive():  # chunked: no content-length, a body that never ends
        reads.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}

    scope = http_scope("POST", "/documents/", {"content-type": "multipart/form-data; boundary=x",
                                               "accept": "text/html"})
    sent = run(scope, receive)
    assert sent[0]["status"] == 413
    assert b"the limit of 1.0 MB" in body_of(sent)
    from core.uploads import request_limit

    assert sum(reads) <= request_limit("/documents/") + len(chunk)  # reading stopped at the limit


def test_a_json_body_past_the_memory_limit_is_a_413_with_the_limit(transactional_db, user):
    token = ApiToken.issue(user=user)[1]
    body = json.dumps({"model": "rag", "messages": [{"role": "user", "content": "x" * (3 * 1024 * 1024)}]}).encode()
    receive = request_body(body)

    scope = http_scope("POST", "/v1/chat/completions", {
        "authorization": f"Bearer {token}", "content-type": "application/json", "content-length": str(len(body)),
    })
    sent = run(scope, receive)
    assert sent[0]["status"] == 413
    assert "larger than the limit of 2.0 MB" in json.loads(body_of(sent))["error"]["message"]


def test_a_client_that_hangs_up_ends_a_streamed_answer(transactional_db, user, handbook, openai_llm, trace):  # noqa: F811
    openai_llm.reply_text = " ".join(f"word{n}" for n in range(40))
    openai_llm.stream_delay = 0.1  # the whole answer would take about 4 s
    token = ApiToken.issue(user=user)[1]
    body = json.dumps({"model": "rag", "stream": True,
                       "messages": [{"role": "user", "content": "How many vacation days?"}]}).encode()
    first_token = threading.Event()
    calls = []

    async def receive():
        calls.append(1)
        if len(calls) == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        while not first_token.is_set():  # the client hangs up once the answer has begun
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    scope = http_scope("POST", "/v1/chat/completions", {"authorization": f"Bearer {token}",
                                                        "content-type": "application/json"})
    sent = run(scope, receive, on_send=lambda m: b"word0" in m.get("body", b"") and first_token.set())
    streamed = body_of(sent)
    assert sent[0]["status"] == 200 and b"word0" in streamed
    assert b"word39" not in streamed and b"[DONE]" not in streamed  # cut short, not streamed to the end
    assert trace.count("finished") == 1  # and closed: its connection went back


def test_requests_one_after_another_run_in_one_kept_thread_without_its_database_connection(transactional_db, user):
    """A request's thread is kept for the next request instead of one being started for each (core.asgi), and keeps
    no database connection between them."""
    from django.db import connections

    token = ApiToken.issue(user=user)[1]
    seen: list[tuple[int, object]] = []

    def started(**kwargs):
        seen.append((threading.get_ident(), connections["default"]))

    signals.request_started.connect(started, weak=False)
    def request_threads() -> int:  # core.asgi's executors name their threads "request_<n>"
        return sum(thread.name.startswith("request") for thread in threading.enumerate())

    try:
        for _ in range(3):
            threads_before = request_threads()
            sent = run(http_scope("GET", "/api/v1/documents", {"authorization": f"Bearer {token}"}), request_body(b""))
            assert sent[0]["status"] == 200
    finally:
        signals.request_started.disconnect(started)
    assert len({ident for ident, _ in seen}) == 1  # the same thread each time
    assert request_threads() == threads_before  # and no thread started for the last request
    assert seen[0][1].connection is None  # its connection was closed with the request


def test_requests_at_the_same_time_each_have_a_thread_of_their_own(transactional_db, user):
    """Two requests in flight at once never share a thread: each reaches the view while the other is in its own."""
    token = ApiToken.issue(user=user)[1]
    both_in = threading.Barrier(2, timeout=20)  # broken (a failure) if the two ran one after the other
    idents: list[int] = []

    def started(**kwargs):
        idents.append(threading.get_ident())
        both_in.wait()

    signals.request_started.connect(started, weak=False)
    results: list[list[dict]] = []
    try:
        clients = [threading.Thread(target=lambda: results.append(run(
            http_scope("GET", "/api/v1/documents", {"authorization": f"Bearer {token}"}), request_body(b""))))
            for _ in range(2)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        signals.request_started.disconnect(started)
    assert [sent[0]["status"] for sent in results] == [200, 200]
    assert len(set(idents)) == 2
