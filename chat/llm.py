"""Language models behind one small interface: OpenAI(-compatible) streaming, or extractive."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.text import provider_message
from documents.search import Hit

logger = logging.getLogger(__name__)

# Every user reads this: it labels the answer as extractive and gives no configuration advice (that is the
# administrators' business: /healthz and the documents page tell them what is in use).
NO_LLM_NOTE = "*No language model is configured, so this answer quotes the most relevant passages.*"
EXTRACTIVE = "none: extractive answers"


class LLMError(Exception):
    """The language model could not answer; ``str()`` is shown to the user."""


class OpenAIChat:
    name = "openai"
    remote = True  # answers over the network, in seconds: callers hold no database connection meanwhile

    def __init__(self):
        import openai

        self.model = settings.LLM_MODEL
        # The client retries 429, 5xx and connection errors itself, with exponential backoff.
        self.client = openai.OpenAI(
            api_key=settings.OPENAI_API_KEY or "not-needed",
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=settings.LLM_TIMEOUT_SECONDS,
            max_retries=settings.LLM_MAX_RETRIES,
        )

    def stream(self, messages: list[dict], *, hits: list[Hit] | None = None) -> Iterator[str]:
        import openai

        try:
            response = self.client.chat.completions.create(model=self.model, messages=messages, stream=True)
            for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
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

    def complete(self, messages: list[dict]) -> str:
        return "".join(self.stream(messages))


class Extractive:
    """No language model: quote the passages' sentences that best match the question."""

    name = "extractive"
    remote = False

    def stream(self, messages: list[dict], *, hits: list[Hit] | None = None) -> Iterator[str]:
        question = messages[-1]["content"].rsplit("Question:", 1)[-1]
        yield from extract_answer(question, hits or [])

    def complete(self, messages: list[dict]) -> str:
        raise LLMError("No language model is configured.")


WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE = re.compile(r"(?<=[.!?])\s+")
STOPWORDS = frozenset(
    "a an the of to in on for and or is are was were be been what which who whom how why when where "
    "does do did it its this that these those with by from as at about can could should would i you".split()
)


def extract_answer(question: str, hits: list[Hit], max_sentences: int = 3) -> Iterator[str]:
    terms = {w for w in WORD.findall(question.lower()) if w not in STOPWORDS}
    scored = []
    for index, hit in enumerate(hits, start=1):
        for position, sentence in enumerate(SENTENCE.split(hit.text)):
            words = set(WORD.findall(sentence.lower()))
            overlap = len(terms & words)
            if overlap and 20 <= len(sentence) <= 600:
                # Earlier passages rank better; ties go to earlier sentences.
                scored.append((-overlap, index, position, sentence.strip(), index))
    scored.sort()
    chosen = scored[:max_sentences]
    if not chosen:
        yield "The documents I can search do not seem to answer this question.\n\n"
        yield NO_LLM_NOTE
        return
    for _, _, _, sentence, index in sorted(chosen, key=lambda item: (item[1], item[2])):
        yield f"> {sentence} [{index}]\n\n"
    yield NO_LLM_NOTE


@cache
def _build(backend: str, model: str, base_url: str, key_set: bool, client_options: tuple = ()):
    # ``client_options`` (the OpenAI key, timeout and retries) is only part of the cache key: the
    # OpenAI client reads them from settings, and must be rebuilt when they change.
    if backend == "auto":
        backend = "openai" if key_set or base_url else "extractive"
    if backend == "openai":
        return OpenAIChat()
    if backend == "extractive":
        return Extractive()
    raise ImproperlyConfigured(f"LLM_BACKEND must be auto, openai or extractive, not {backend!r}.")


def get_llm():
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
