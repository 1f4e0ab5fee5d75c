"""chat/llm.py: OpenAI(-compatible) streaming against a real loopback server, retries, errors, extractive."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat import llm
from documents.search import Hit

MESSAGES = [{"role": "system", "content": "Rules."}, {"role": "user", "content": "Question: vacation days?"}]


@pytest.fixture
def openai_llm(llm, settings):
    settings.LLM_MODEL = "gpt-4o-mini"
    return llm


def hit(i, text):
    return Hit(chunk_id=i, document_id=100 + i, document_title=f"Doc {i}", page=None, heading="", text=text, score=1.0)


def test_stream_yields_the_models_tokens_in_order(openai_llm):
    openai_llm.reply_text = "Employees get twenty-five days [1]."
    tokens = list(llm.get_llm().stream(MESSAGES))
    assert len(tokens) > 1 and "".join(tokens) == "Employees get twenty-five days [1]."
    request = openai_llm.requests_to("/chat/completions")[0]
    assert request.body["stream"] is True and request.body["model"] == "gpt-4o-mini"
    assert request.headers["authorization"] == "Bearer k"
    assert openai_llm.last_messages == MESSAGES


def test_client_is_rebuilt_when_timeout_retries_or_key_change(openai_llm, settings):
    first = llm.get_llm()
    assert (first.client.max_retries, first.client.timeout, first.client.api_key) == (1, 5, "k")
    settings.LLM_MAX_RETRIES = 0
    assert llm.get_llm().client.max_retries == 0
    settings.LLM_TIMEOUT_SECONDS = 0.5
    assert llm.get_llm().client.timeout == 0.5
    settings.OPENAI_API_KEY = "other"
    assert llm.get_llm().client.api_key == "other"
    settings.LLM_MAX_RETRIES, settings.LLM_TIMEOUT_SECONDS, settings.OPENAI_API_KEY = 1, 5, "k"
    assert llm.get_llm() is first  # same configuration, same cached client


def test_rate_limit_then_success_is_retried_and_answers(openai_llm):
    openai_llm.fail(429, retry_after_ms=10)
    assert "".join(llm.get_llm().stream(MESSAGES)) == openai_llm.reply_text
    assert len(openai_llm.requests_to("/chat/completions")) == 2


def test_persistent_server_error_gives_a_clear_error_after_bounded_retries(openai_llm):
    openai_llm.fail(500, retry_after_ms=10, times=5)
    with pytest.raises(llm.LLMError, match=r"language model failed \(HTTP 500: The server had an error"):
        list(llm.get_llm().stream(MESSAGES))
    assert len(openai_llm.requests_to("/chat/completions")) == 2  # first try + LLM_MAX_RETRIES=1


def test_rate_limits_beyond_the_retries_give_a_clear_error(openai_llm):
    openai_llm.fail(429, retry_after_ms=10, times=5)
    with pytest.raises(llm.LLMError, match="over its rate limit"):
        list(llm.get_llm().stream(MESSAGES))
    assert len(openai_llm.requests_to("/chat/completions")) == 2


def test_client_errors_are_not_retried(openai_llm):
    openai_llm.fail(400, message="This model's maximum context length is 128000 tokens.")
    with pytest.raises(llm.LLMError, match="HTTP 400: This model's maximum context length"):
        list(llm.get_llm().stream(MESSAGES))
    assert len(openai_llm.requests_to("/chat/completions")) == 1


def test_a_slow_model_times_out_with_a_clear_error(openai_llm, settings):
    settings.LLM_TIMEOUT_SECONDS = 0.3
    settings.LLM_MAX_RETRIES = 0
    openai_llm.delay(3.0)
    with pytest.raises(llm.LLMError, match="did not answer in time"):
        list(llm.get_llm().stream(MESSAGES))


def test_a_rejected_api_key_names_the_setting(openai_llm):
    openai_llm.api_key = "the-right-one"
    with pytest.raises(llm.LLMError, match="OPENAI_API_KEY"):
        list(llm.get_llm().stream(MESSAGES))


def test_auto_backend_is_extractive_without_a_configured_provider(settings):
    settings.LLM_BACKEND = "auto"
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    assert isinstance(llm.get_llm(), llm.Extractive)
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    assert isinstance(llm.get_llm(), llm.OpenAIChat)


def test_an_unknown_backend_is_a_configuration_error(settings):
    settings.LLM_BACKEND = "gpt-in-a-box"
    with pytest.raises(ImproperlyConfigured, match="LLM_BACKEND"):
        llm.get_llm()


def test_extractive_answer_quotes_matching_sentences_with_their_passage_numbers():
    hits = [
        hit(1, "The kitchen is cleaned every Friday. Nothing else happens here at all."),
        hit(2, "Employees receive twenty-five vacation days per year. Unused vacation days expire in March."),
    ]
    answer = "".join(llm.Extractive().stream(
        [{"role": "user", "content": "<passages>…</passages>\n\nQuestion: How many vacation days?"}], hits=hits,
    ))
    assert "> Employees receive twenty-five vacation days per year. [2]" in answer
    assert "> Unused vacation days expire in March. [2]" in answer
    assert "kitchen" not in answer
    assert answer.endswith(llm.NO_LLM_NOTE) and "No language model is configured" in llm.NO_LLM_NOTE


def test_a_server_that_refuses_stream_options_is_asked_without_them(openai_llm):
    openai_llm.fail(400, message="Unrecognized request argument supplied: stream_options")
    model = llm.get_llm()
    usage = llm.Usage()
    assert "".join(model.stream(MESSAGES, usage=usage)) == openai_llm.reply_text
    first, second = openai_llm.requests_to("/chat/completions")
    assert "stream_options" in first.body and "stream_options" not in second.body
    totals = usage.totals()
    assert totals["source"] in ("tiktoken", "estimate") and totals["completion_tokens"] > 0  # counted here
    "".join(model.stream(MESSAGES))
    assert "stream_options" not in openai_llm.requests_to("/chat/completions")[-1].body  # remembered


def test_other_bad_requests_are_not_retried(openai_llm):
    openai_llm.fail(400, message="Bad input")
    with pytest.raises(llm.LLMError, match=r"HTTP 400: Bad input"):
        list(llm.get_llm().stream(MESSAGES))
    assert len(openai_llm.requests_to("/chat/completions")) == 1
