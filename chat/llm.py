"""Language models behind one small interface: OpenAI(-compatible) streaming, or extractive."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, TypedDict, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat import extractive, prompting
from chat.extractive import NO_LLM_NOTE  # noqa: F401  (where the health tests and callers read it)
from core.text import provider_message
from documents.search import Hit

if TYPE_CHECKING:
    from openai import Stream
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

logger = logging.getLogger(__name__)

EXTRACTIVE = "none: extractive answers"


class LLMError(Exception):
    """The language model could not answer; ``str()`` is shown to the user."""


class UsageData(TypedDict):
    """Tokens in OpenAI's terms, and where they come from: ``provider`` (the model's server reported them),
    ``tiktoken`` (counted with cl100k_base from tiktoken's local cache, chat.prompting), ``estimate``
    (chat.prompting.count_tokens' estimate), or ``none`` (no model was called: all 0)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    source: str


# Less exact last: a sum with one counted call is "counted".
SOURCES = ("none", "provider", "tiktoken", "estimate")
# OpenAI's accounting of a chat prompt: each message costs its content and 3 tokens, the reply's priming 3.
TOKENS_PER_MESSAGE = 3


@dataclass
class Usage:
    """Tokens the language model spent on one answer, summed over its calls (a rewrite, the answer).

    A call whose server reported no usage is kept as text and counted only when ``totals()`` is asked
    (by the OpenAI-compatible API): the chat page never pays for counting (a few ms per 5k-token prompt).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    source: str = "none"
    uncounted: list[tuple[list[dict[str, str]], str]] = field(default_factory=list, repr=False)

    def reported(self, prompt_tokens: int, completion_tokens: int) -> None:
        self._add(prompt_tokens, completion_tokens, "provider")

    def unreported(self, messages: list[dict[str, str]], completion: str) -> None:
        self.uncounted.append((messages, completion))

    def totals(self) -> UsageData:
        for messages, completion in self.uncounted:
            prompt = sum(prompting.count_tokens(m["content"]) + TOKENS_PER_MESSAGE for m in messages)
            self._add(prompt + TOKENS_PER_MESSAGE, prompting.count_tokens(completion) if completion else 0,
                      "tiktoken" if prompting.llm_encoding() is not None else "estimate")
        self.uncounted.clear()
        return UsageData(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                         total_tokens=self.prompt_tokens + self.completion_tokens, source=self.source)

    def _add(self, prompt_tokens: int, completion_tokens: int, source: str) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.source = max(self.source, source, key=SOURCES.index)


class OpenAIChat:
    name = "openai"
    remote = True  # answers over the network, in seconds: callers hold no database connection meanwhile

    def __init__(self) -> None:
        import openai

        self.model = settings.LLM_MODEL
        # The client retries 429, 5xx and connection errors itself, with exponential backoff.
        self.client = openai.OpenAI(
            api_key=settings.OPENAI_API_KEY or "not-needed",
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=settings.LLM_TIMEOUT_SECONDS,
            max_retries=settings.LLM_MAX_RETRIES,
        )
        # Asking for the server's token count (stream_options.include_usage) until it refuses the option.
        self.ask_usage = True

    def _create(self, messages: list[dict[str, str]]) -> Stream[ChatCompletionChunk]:
        """The streamed completion; once more without ``stream_options`` from a server that refuses it."""
        import openai

        # Roles are system/user/assistant (chat.prompting), which the client's TypedDicts cannot infer.
        params = cast("list[ChatCompletionMessageParam]", messages)
        if self.ask_usage:
            try:
                # include_usage: the server's own count arrives in a last chunk without choices (OpenAI,
                # vLLM, Ollama); servers that ignore it report nothing, and the tokens are counted here.
                return self.client.chat.completions.create(
                    model=self.model, messages=params, stream=True, stream_options={"include_usage": True},
                )
            except openai.BadRequestError as error:
                if "stream_options" not in str(error):
                    raise
                logger.warning("the language model's server refuses stream_options: tokens are counted here")
                self.ask_usage = False
        return self.client.chat.completions.create(model=self.model, messages=params, stream=True)

    def stream(
        self, messages: list[dict[str, str]], *, hits: list[Hit] | None = None, usage: Usage | None = None,
    ) -> Iterator[str]:
        """The answer's text as it streams; ``usage`` (if given) gets the tokens spent, once it ends."""
        import openai

        parts: list[str] = []
        reported = None
        try:
            for chunk in self._create(messages):
                if chunk.usage is not None:
                    reported = chunk.usage
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                    yield chunk.choices[0].delta.content
        # The client has already retried (LLM_MAX_RETRIES) what is worth retrying: these are final.
        except openai.RateLimitError as error:
            raise LLMError(
                f"The language model is over its rate limit (HTTP 429: {provider_message(error)}). "
                "Please try again in a moment."
            ) from error
        except openai.AuthenticationError as error:
            raise LLMError(
                f"The language model refused our API key (HTTP 401: {provider_message(error)}). "
                "An administrator must check OPENAI_API_KEY."
            ) from error
        except openai.APIStatusError as error:
            raise LLMError(
                f"The language model failed (HTTP {error.status_code}: {provider_message(error)}). "
                "Please try again."
            ) from error
        except openai.APITimeoutError as error:
            raise LLMError("The language model did not answer in time. Please try again.") from error
        except openai.APIConnectionError as error:
            raise LLMError("The language model could not be reached. Please try again later.") from error
        except openai.APIError as error:  # e.g. an error event in the middle of the stream
            raise LLMError(
                f"The language model failed while answering ({provider_message(error)}). Please try again."
            ) from error
        if usage is not None:
            if reported is not None:
                usage.reported(reported.prompt_tokens, reported.completion_tokens)
            else:
                usage.unreported(messages, "".join(parts))

    def complete(self, messages: list[dict[str, str]], *, usage: Usage | None = None) -> str:
        return "".join(self.stream(messages, usage=usage))


class Extractive:
    """No language model: the passages' sentences that best answer the question (chat.extractive)."""

    name = "extractive"
    remote = False

    def stream(
        self, messages: list[dict[str, str]], *, hits: list[Hit] | None = None, usage: Usage | None = None,
    ) -> Iterator[str]:
        """The extractive answer; no model spends tokens, so ``usage`` stays as it is."""
        question = messages[-1]["content"].rsplit("Question:", 1)[-1]
        yield from extractive.answer(question.strip(), hits or [])

    def complete(self, messages: list[dict[str, str]], *, usage: Usage | None = None) -> str:
        raise LLMError("No language model is configured.")


@cache
def _build(
    backend: str, model: str, base_url: str, key_set: bool, client_options: tuple[object, ...] = (),
) -> OpenAIChat | Extractive:
    # ``client_options`` (the OpenAI key, timeout and retries) is only part of the cache key: the
    # OpenAI client reads them from settings, and must be rebuilt when they change.
    if backend == "auto":
        backend = "openai" if key_set or base_url else "extractive"
    if backend == "openai":
        return OpenAIChat()
    if backend == "extractive":
        return Extractive()
    raise ImproperlyConfigured(f"LLM_BACKEND must be auto, openai or extractive, not {backend!r}.")


def get_llm() -> OpenAIChat | Extractive:
    """The configured language model (cached per process and per configuration)."""
    client_options = (settings.OPENAI_API_KEY, settings.LLM_TIMEOUT_SECONDS, settings.LLM_MAX_RETRIES)
    return _build(
        settings.LLM_BACKEND, settings.LLM_MODEL, settings.OPENAI_BASE_URL, bool(settings.OPENAI_API_KEY),
        client_options,
    )


def active_llm_info() -> str:
    """The language model answers come from, for the health report: its name, or that there is none."""
    llm = get_llm()
    return llm.model if isinstance(llm, OpenAIChat) else EXTRACTIVE
