"""An OpenAI-compatible API over the caller's documents: GET /v1/models, POST /v1/chat/completions.

Any OpenAI client works against it unchanged (``base_url=".../v1"``, the API token as api_key);
answers carry a top-level ``citations`` list.

``usage`` is what the language model spent on the answer (a follow-up's rewrite included): the counts
its server reported, or, from a server that reports none, counted here with tiktoken's cl100k_base
when it is in tiktoken's local cache, else with chat.prompting's estimate. Streamed, it comes as
OpenAI sends it: in a last chunk without choices when the request asks for
``stream_options: {"include_usage": true}``. Without a language model (extractive answers) or when
nothing relevant was found, no model was asked: all counts are 0.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Literal

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError

from chat import services
from chat.prompting import Turn
from core import http, ratelimit
from core.auth import BearerToken
from core.http import parse_id
from core.streaming import sse_response
from documents.models import Collection
from documents.search import Filters, UnknownCollection

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "rag"
MODEL_PREFIX = "rag-collection-"


class ChatMessage(Schema):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list | None = None


class StreamOptions(Schema):
    include_usage: bool = False


class ChatCompletionRequest(Schema):
    model: str = DEFAULT_MODEL
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    max_tokens: int | None = None


api = NinjaAPI(
    title="OpenAI-compatible chat over your documents",
    version="1",
    auth=BearerToken(),
    urls_namespace="openai",
    docs_url=None,
)


def _error(
    status: int, message: str, kind: str = "invalid_request_error", *, retry: bool | None = None,
    code: str | None = None, param: str | None = None,
) -> JsonResponse:
    """An error in OpenAI's shape, which its clients turn into the matching exception."""
    response = JsonResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)
    if retry is not None:  # OpenAI clients obey this header over their own retry rules
        response["x-should-retry"] = "true" if retry else "false"
    return response


# OpenAI clients expect {"error": {...}} bodies, not ninja's {"detail": ...}.
@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return _error(401, "Invalid or missing API token.", "authentication_error")


@api.exception_handler(ValidationError)
def _invalid(request, exc):
    return _error(400, f"Invalid request: {exc.errors}")


@api.exception_handler(HttpError)
def _http_error(request, exc):
    return _error(exc.status_code, str(exc))


@api.exception_handler(Http404)
def _not_found(request, exc):
    return _error(404, "Not found.")


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    return _error(413, http.too_big_message(), code="request_too_large")


@api.exception_handler(Exception)
def _unexpected(request, exc):
    logger.exception("OpenAI-compatible API: unexpected error")
    return _error(500, "The server failed to answer; the error was logged.", "server_error")


def _is_text(part: dict) -> bool:
    return part.get("type", "text") == "text"


def _invalid_part(messages: list[ChatMessage]) -> tuple[str, str] | None:
    """The first content part that is not an object, or a text part whose text is not a string: (param, why)."""
    for i, message in enumerate(messages):
        for j, part in enumerate(message.content if isinstance(message.content, list) else []):
            if not isinstance(part, dict):
                return f"messages[{i}].content[{j}]", 'expected an object such as {"type": "text", "text": "..."}'
            if _is_text(part) and not isinstance(part.get("text"), str):
                return f"messages[{i}].content[{j}]", "a text part needs its text as a string"
    return None


def _text(content) -> str:
    if isinstance(content, list):  # content parts (checked by _invalid_part): keep the text ones
        return " ".join(part["text"] for part in content if _is_text(part))
    return content or ""


@api.get("/models")
def list_models(request):
    """One model per readable collection, plus ``rag`` over all of them."""
    created = int(time.time())
    data = [{"id": DEFAULT_MODEL, "object": "model", "created": created, "owned_by": "rag"}]
    for collection in Collection.objects.visible_to(request.user).select_related("owner"):
        data.append({
            "id": f"{MODEL_PREFIX}{collection.pk}", "object": "model",
            "created": int(collection.created_at.timestamp()),
            "owned_by": collection.owner.get_username(), "name": collection.name,
        })
    return {"object": "list", "data": data}


def _filters_for(user, model: str) -> Filters | None:
    """A model's search filters: None for ``rag`` (all the user may read), or one readable collection.

    Raises UnknownCollection for any other name, or a collection the user may not read.
    """
    if model == DEFAULT_MODEL:
        return None
    pk = parse_id(model.removeprefix(MODEL_PREFIX)) if model.startswith(MODEL_PREFIX) else None
    if pk is None or not Collection.objects.visible_to(user).filter(pk=pk).exists():
        raise UnknownCollection(model)
    return Filters(collections=(pk,))


def _usage(result: services.Result) -> dict:
    usage = result["usage"].totals()
    return {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _citations(result: services.Result) -> list[dict]:
    hits = result["hits"]
    return [
        {"index": i, "document_id": hits[i - 1].document_id, "title": hits[i - 1].document_title,
         "page": hits[i - 1].page, "chunk_id": hits[i - 1].chunk_id}
        for i in result["cited"]
    ]


@api.post("/chat/completions")
def chat_completions(request, body: ChatCompletionRequest):
    """The last user message is the question; earlier turns are the history.

    Sync, like the token check and the middleware: the whole answer runs in the request's thread,
    without switching to the event loop and back before the first token. Under ASGI the stream is
    served as an async iterator (core.streaming), so it holds no thread while the model thinks.
    """
    user = request.auth
    try:
        filters = _filters_for(user, body.model)
    except UnknownCollection:
        return _error(404, f"The model '{body.model}' does not exist or you do not have access to it.")
    if invalid := _invalid_part(body.messages):
        param, why = invalid
        return _error(400, f"Invalid content part '{param}': {why}.", param=param)
    turns = [(m.role, services.clean_question(_text(m.content)))
             for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1][0] != "user" or not turns[-1][1]:
        return _error(400, "The last message must be a non-empty user message.")
    if too_long := services.question_too_long(turns[-1][1]):
        return _error(400, too_long)
    allowed, retry_after = ratelimit.hit("chat", user)
    if not allowed:  # OpenAI's own shape and header: its clients wait Retry-After and try again
        return ratelimit.refused(request, "chat", retry_after, response=_error(
            429, ratelimit.message("chat", retry_after), "requests", code="rate_limit_exceeded"))
    question = turns[-1][1]
    history: list[Turn] = [{"role": role, "content": text} for role, text in turns[:-1]]
    generator = services.answer(user=user, question=question, history=history, filters=filters)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    # The answer reuses the connection the token check took, and hands it back before the model
    # answers (services.release_connection).

    if not body.stream:
        result: services.Result | None = None
        for event in generator:
            if event["type"] == "result":
                result = event
        assert result is not None  # answer() always ends with its Result
        if result["error"]:  # a cut-off answer is not an answer: report the failure
            return _error(502, result["error"], "api_error", retry=False)
        services.note_interest(user=user, result=result)  # as the page's questions do (recommendations)
        return JsonResponse({
            "id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": result["content"]}}],
            "usage": _usage(result),
            "citations": _citations(result),
        })

    # Wait for the first event before answering 200: a model that fails before its first token
    # (down, over its rate limit, timed out) gets a proper HTTP error.
    first = next(generator, None)
    if first is not None and first["type"] == "result" and first["error"]:
        return _error(502, first["error"], "api_error", retry=False)

    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def chunk(delta: dict | None, finish: str | None = None, **extra) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                   "model": body.model, "choices": choices, **extra}
        if include_usage:  # as OpenAI: null in every chunk but the last, which has no choices
            payload.setdefault("usage", None)
        return f"data: {json.dumps(payload)}\n\n"

    def events():
        try:
            yield chunk({"role": "assistant", "content": ""})
            event = first
            while event is not None:
                if event["type"] == "token":
                    yield chunk({"content": event["text"]})
                elif event["error"]:
                    # Failed mid-answer: OpenAI's in-stream error event, which its clients raise as APIError.
                    yield f"data: {json.dumps({'error': {'message': event['error'], 'type': 'api_error'}})}\n\n"
                    return
                else:
                    services.note_interest(user=user, result=event)  # as the page's questions do
                    yield chunk({}, "stop", citations=_citations(event))
                    if include_usage:
                        yield chunk(None, usage=_usage(event))
                event = next(generator, None)
            yield "data: [DONE]\n\n"
        finally:  # a client that hangs up also ends the model's stream
            generator.close()

    return sse_response(request, events())


__all__ = ["api"]
