"""A real HTTP server on loopback that speaks the OpenAI protocol, for tests driving the real ``openai`` client.

Standard library only: ``http.server.ThreadingHTTPServer`` on ``127.0.0.1`` (port 0) in a daemon thread.

Endpoints (under ``/v1``):

- ``POST /v1/embeddings``: ``input`` a string or a list of strings; ``dimensions`` optional (OpenAI answers
  400 when a model other than ``text-embedding-3-*`` is given it, and so does this server unless
  ``strict_dimensions`` is off); ``encoding_format`` ``"float"`` or ``"base64"`` (little-endian float32, what
  the openai client asks for when the caller names no format). Vectors are deterministic: seeded from a hash
  of (text, dimension), L2-normalised unless ``normalize_embeddings`` is off, ``embedding_dim`` long (384 by
  default) unless the request names ``dimensions``. ``server.embedding_for(text)`` gives the expected vector.
- ``POST /v1/chat/completions``: ``stream: false`` answers one ``chat.completion``; ``stream: true`` answers
  server-sent events (a role chunk, one chunk per token of ``reply_text``, a final chunk with
  ``finish_reason``, a usage chunk if ``stream_options.include_usage`` (unless ``stream_usage`` is off), then
  ``data: [DONE]``), sent with chunked transfer encoding, ``stream_delay`` seconds apart. The received
  messages are kept in ``server.chat_messages`` (one list per request; ``server.last_messages`` is the latest).
- ``GET /v1/models``: the ids in ``server.models``.

Scripted failures, consumed one per request (any endpoint), in order, before normal answers resume::

    server.fail(429, retry_after_ms=10)              # 429 with a ``retry-after-ms: 10`` header
    server.fail(500, times=2)                        # two 500s
    server.fail(400, message="Bad input", type="invalid_request_error", code="bad_input")
    server.delay(2.0)                                # sleep 2 s, then answer normally (timeouts)
    server.fail(503, sleep=1.0, headers={"x-should-retry": "false"})

Error bodies are OpenAI's: ``{"error": {"message", "type", "param", "code"}}``. Every request is recorded in
``server.requests`` (``RecordedRequest(method, path, headers, body)``; header names lower-case; the body is
the parsed JSON, or ``None``); ``server.requests_to("/embeddings")`` filters by path ending. Setting
``server.api_key`` makes the server answer 401 to any other bearer token.

Use it in a test module with::

    from tests.openai_server import openai_server  # noqa: F401  (the fixture)

    def test_something(openai_server, settings):
        settings.OPENAI_BASE_URL = openai_server.url   # "http://127.0.0.1:<port>/v1"

or make it available to every test by adding that same import line to ``tests/conftest.py``. Outside pytest,
``with running_openai_server() as server: ...`` starts and stops one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

DEFAULT_REPLY = "Answer based on [1]."
DEFAULT_EMBEDDING_DIM = 384

DEFAULT_ERRORS = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    408: ("Request timed out.", "timeout", None),
    409: ("Conflict.", "invalid_request_error", None),
    422: ("Unprocessable entity.", "invalid_request_error", None),
    429: ("Rate limit reached for requests. Please try again in 10ms.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up on a kept-alive connection: not a test failure
        super().handle_error(request, client_address)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: object


@dataclass
class Step:
    """One scripted answer: sleep ``sleep`` seconds, then fail with ``status`` (or answer normally if None)."""

    status: int | None = None
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sleep: float = 0.0


def error_body(status: int, message: str | None = None, type: str | None = None, code: str | None = None) -> dict:
    default_message, default_type, default_code = DEFAULT_ERRORS.get(status, (f"HTTP {status}", "api_error", None))
    return {
        "error": {
            "message": message if message is not None else default_message,
            "type": type if type is not None else default_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def tokens_of(text: str) -> list[str]:
    """Split a reply into stream tokens the way models do: words with their leading whitespace."""
    return re.findall(r"\s*\S+", text) or [text]


class OpenAIServer:
    """The server's state and the API tests use; ``start()``/``close()`` run and stop it."""

    def __init__(
        self,
        *,
        reply_text: str = DEFAULT_REPLY,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        models: list[str] | None = None,
    ):
        self.reply_text = reply_text
        self.embedding_dim = embedding_dim
        self.models = models or ["gpt-4o-mini", "text-embedding-3-small", "text-embedding-3-large"]
        self.api_key: str | None = None  # when set, other bearer tokens get a 401
        self.normalize_embeddings = True
        self.reverse_embedding_order = False  # list `data` in reverse (with correct `index`), as a client must cope
        self.strict_dimensions = True  # 400 for `dimensions` on a model other than text-embedding-3-*
        self.stream_delay = 0.0  # seconds between streamed chunks
        self.finish_reason = "stop"
        self.stream_usage = True  # False: ignore stream_options.include_usage, as some compatible servers do
        self.requests: list[RecordedRequest] = []
        self.chat_messages: list[list[dict]] = []
        self._script: deque[Step] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes handlers sleeping for a scripted delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``OPENAI_BASE_URL``)."""
        return f"{self.base}/v1"

    # ---- script --------------------------------------------------------------------------------------------
    def queue(self, *steps: Step) -> None:
        with self._lock:
            self._script.extend(steps)

    def fail(
        self,
        status: int = 500,
        *,
        message: str | None = None,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        retry_after_ms: int | None = None,
        body: dict | None = None,
        sleep: float = 0.0,
        times: int = 1,
    ) -> None:
        """Queue ``times`` error answers: ``status`` with an OpenAI error body (or ``body`` as given)."""
        headers = dict(headers or {})
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        payload = body if body is not None else error_body(status, message, type, code)
        self.queue(*(Step(status, payload, headers, sleep) for _ in range(times)))

    def delay(self, seconds: float, *, times: int = 1) -> None:
        """Queue ``times`` answers that come only after ``seconds`` (the client may time out first)."""
        self.queue(*(Step(None, None, {}, seconds) for _ in range(times)))

    @property
    def pending(self) -> int:
        """Scripted answers not consumed yet."""
        with self._lock:
            return len(self._script)

    def _next_step(self) -> Step | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    # ---- records -------------------------------------------------------------------------------------------
    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.path.split("?")[0].endswith(path_suffix)]

    @property
    def last_messages(self) -> list[dict] | None:
        return self.chat_messages[-1] if self.chat_messages else None

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
        self.requests.clear()
        self.chat_messages.clear()

    # ---- answers -------------------------------------------------------------------------------------------
    def embedding_for(self, text: str, dim: int | None = None) -> list[float]:
        """The vector this server returns for ``text`` (normalised as configured)."""
        dim = dim or self.embedding_dim
        seed = int.from_bytes(hashlib.sha256(f"{dim}:{text}".encode()).digest()[:8], "little")
        rng = random.Random(seed)
        vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
        if self.normalize_embeddings:
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vector = [x / norm for x in vector]
        return vector

    def reply_tokens(self) -> list[str]:
        return tokens_of(self.reply_text)


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        state = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    state: OpenAIServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client (httpx) expects
    server_version = "openai-test-server/1.0"

    def log_message(self, format, *args):  # quiet: pytest shows what matters
        pass

    # ---- plumbing ------------------------------------------------------------------------------------------
    def _read_body(self) -> object:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_{time.monotonic_ns()}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str, type: str = "invalid_request_error", code=None) -> None:
        self._send_json(status, error_body(status, message, type, code))

    def _handle(self, method: str) -> None:
        body = self._read_body() if method == "POST" else None
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.state.requests.append(RecordedRequest(method, self.path, headers, body))
        try:
            step = self.state._next_step()
            if step is not None:
                if step.sleep and self.state._closing.wait(step.sleep):
                    return  # the server is closing: the client gave up long ago
                if step.status is not None:
                    self._send_json(step.status, step.body or error_body(step.status), step.headers)
                    return
            expected = self.state.api_key
            if expected is not None and headers.get("authorization") != f"Bearer {expected}":
                self._send_error(401, DEFAULT_ERRORS[401][0], code="invalid_api_key")
                return
            path = self.path.split("?")[0].rstrip("/")
            if method == "GET" and path == "/v1/models":
                self._models()
            elif method == "POST" and path == "/v1/embeddings":
                self._embeddings(body)
            elif method == "POST" and path == "/v1/chat/completions":
                self._chat(body)
            else:
                self._send_error(404, f"Unknown request URL: {method} {self.path}.", code="unknown_url")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out or went away

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    # ---- endpoints -----------------------------------------------------------------------------------------
    def _models(self) -> None:
        created = int(time.time())
        data = [{"id": m, "object": "model", "created": created, "owned_by": "test"} for m in self.state.models]
        self._send_json(200, {"object": "list", "data": data})

    def _embeddings(self, body) -> None:
        if not isinstance(body, dict) or "input" not in body or "model" not in body:
            self._send_error(400, "'input' and 'model' are required properties.")
            return
        model, texts = body["model"], body["input"]
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self._send_error(400, "'input' must be a non-empty string or array of strings.", code="invalid_input")
            return
        dim = body.get("dimensions")
        if dim is not None and self.state.strict_dimensions and not str(model).startswith("text-embedding-3"):
            self._send_error(400, "This model does not support specifying dimensions.")
            return
        dim = int(dim or self.state.embedding_dim)
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            self._send_error(400, f"Invalid encoding_format {encoding!r}: 'float' or 'base64'.")
            return
        data = []
        for index, text in enumerate(texts):
            vector: list[float] | str = self.state.embedding_for(text, dim)
            if encoding == "base64":
                vector = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        if self.state.reverse_embedding_order:
            data.reverse()
        tokens = sum(len(t.split()) for t in texts)
        self._send_json(200, {
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    def _chat(self, body) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "model" not in body:
            self._send_error(400, "'messages' and 'model' are required properties.")
            return
        self.state.chat_messages.append(body["messages"])
        model = body["model"]
        tokens = self.state.reply_tokens()
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body["messages"] if isinstance(m, dict))
        usage = {
            "prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        ident, created = f"chatcmpl-{time.monotonic_ns()}", int(time.time())
        if not body.get("stream"):
            self._send_json(200, {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{
                    "index": 0, "logprobs": None, "finish_reason": self.state.finish_reason,
                    "message": {"role": "assistant", "content": self.state.reply_text, "refusal": None},
                }],
                "usage": usage,
            })
            return

        def chunk(delta: dict, finish_reason=None, **extra) -> dict:
            return {
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                **extra,
            }

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": token}) for token in tokens]
        events.append(chunk({}, self.state.finish_reason))
        if (body.get("stream_options") or {}).get("include_usage") and self.state.stream_usage:
            events.append({**chunk({}), "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
            if self.state.stream_delay and self.state._closing.wait(self.state.stream_delay):
                return
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@contextmanager
def running_openai_server(**kwargs) -> Iterator[OpenAIServer]:
    server = OpenAIServer(**kwargs).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh loopback OpenAI-protocol server per test (see the module docstring)."""
    with running_openai_server() as server:
        yield server


@pytest.fixture
def llm(settings, openai_server: OpenAIServer) -> OpenAIServer:
    """The product's language model is the loopback server (which records every request it gets), with small,
    fast retry limits."""
    settings.LLM_BACKEND = "openai"
    settings.OPENAI_BASE_URL = openai_server.url
    settings.OPENAI_API_KEY = "k"
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_TIMEOUT_SECONDS = 5
    return openai_server
