"""chat/services.py: answer and ask, with the LLM on a loopback OpenAI server or the extractive backend."""

import pytest

from chat import llm, prompting, services
from chat.models import Conversation, Message
from documents import search as retrieval
from documents.exceptions import EmbeddingError
from documents.models import Collection
from tests.documents_factory import add_text_document as add

pytestmark = pytest.mark.django_db

TEXTS = {
    "vacation": "Employees receive twenty-five vacation days per year. Unused vacation days expire in March.",
    "security": "Laptops must use full disk encryption. The screen locks after five minutes without input.",
    "kitchen": "The office kitchen is cleaned every Friday afternoon by the facilities team.",
}





@pytest.fixture
def library(user, collection):
    return {name: add(user, collection, name, text) for name, text in TEXTS.items()}


@pytest.fixture
def openai_llm(llm):
    return llm


@pytest.fixture
def extractive(settings):
    settings.LLM_BACKEND = "extractive"


@pytest.fixture
def conversation(user):
    return Conversation.objects.create(owner=user)


@pytest.fixture
def searches(monkeypatch):
    """The queries retrieval is asked, recorded on the way through to the real search."""
    queries = []
    real = retrieval.search

    def recording(**kwargs):
        queries.append(kwargs["query"])
        return real(**kwargs)

    monkeypatch.setattr(retrieval, "search", recording)
    return queries


def run(conversation, question, **kwargs):
    events = list(services.ask(conversation=conversation, question=question, **kwargs))
    assert events[-1]["type"] == "done"
    return events[-1]


def test_cited_indexes_reads_each_form_once_in_order_and_ignores_unknown_numbers():
    assert services.cited_indexes("A [2]. B [1][2]. C [3, 1]. D [9] [0].", available=3) == [2, 1, 3]


def test_answer_cites_only_the_passages_it_uses(openai_llm, conversation, library):
    openai_llm.reply_text = "Laptops need full disk encryption [2]."
    done = run(conversation, "vacation days and laptop encryption")
    prompt = openai_llm.last_messages[-1]["content"]
    assert '<passage index="1"' in prompt and '<passage index="2"' in prompt  # two passages given...
    assert [c["index"] for c in done["citations"]] == [1]  # ...one cited, numbered 1 (chat.citations)
    assert prompt.split('<passage index="2"')[1].split("</passage>")[0].count(TEXTS["security"][:30]) == 1
    assert done["citations"][0]["document_id"] == library["security"].pk
    assert done["content"] == "Laptops need full disk encryption [1]." and done["error"] == ""


def test_ask_saves_the_question_the_answer_and_its_citations(openai_llm, conversation, library):
    openai_llm.reply_text = "Twenty-five days [1]."
    done = run(conversation, "  How many vacation days do employees get?  ")
    user_message, answer = conversation.messages.all()
    assert (user_message.role, user_message.content) == ("user", "How many vacation days do employees get?")
    assert (answer.pk, answer.role, answer.content, answer.backend) == (
        done["message_id"], "assistant", "Twenty-five days [1].", "openai",
    )
    citation = answer.citation_set.get()
    assert (citation.index, citation.document_id, citation.title) == (1, library["vacation"].pk, "vacation")
    assert done["citations"][0]["url"].endswith(f"#chunk-{citation.chunk_id}")
    conversation.refresh_from_db()
    assert conversation.title == "How many vacation days do employees get?"


def test_tokens_stream_before_the_answer_is_saved(openai_llm, conversation, library):
    openai_llm.reply_text = "Twenty-five vacation days per year [1]."
    events = list(services.ask(conversation=conversation, question="vacation days"))
    tokens = [e["text"] for e in events if e["type"] == "token"]
    assert len(tokens) > 1 and "".join(tokens) == events[-1]["content"]


def test_nothing_relevant_says_so_without_asking_the_model(openai_llm, conversation, library):
    done = run(conversation, "xylophone quarterly zeppelin")
    assert done["content"] == services.NOTHING_FOUND
    assert done["citations"] == [] and done["error"] == ""
    assert openai_llm.requests_to("/chat/completions") == []


def test_follow_up_is_rewritten_with_the_history_and_the_rewrite_is_searched(
    openai_llm, conversation, library, searches,
):
    follow_up = "What happens after that?"
    hits = retrieval.search(user=conversation.owner, query=follow_up, k=6)
    assert not any(h.relevant for h in hits)  # as asked, the follow-up finds nothing
    searches.clear()
    Message.objects.create(conversation=conversation, role="user", content="Do laptops need disk encryption?")
    Message.objects.create(conversation=conversation, role="assistant", content="Yes, full disk encryption [1].")
    openai_llm.reply_text = "laptop screen locks after five minutes [1]"  # the rewrite, then the answer

    done = run(conversation, follow_up)

    rewrite, answer = openai_llm.chat_messages
    assert rewrite[0]["content"] == prompting.REWRITE_PROMPT
    assert "Do laptops need disk encryption?" in rewrite[1]["content"]
    assert rewrite[1]["content"].endswith(f"Last question: {follow_up}")
    assert searches == ["laptop screen locks after five minutes [1]"]
    assert answer[-1]["content"].endswith(f"Question: {follow_up}")  # the model answers the question as asked
    assert [c["document_id"] for c in done["citations"]] == [library["security"].pk]


def test_history_goes_into_the_prompt_of_the_next_question(openai_llm, conversation, library):
    openai_llm.reply_text = "Twenty-five vacation days [1]."
    run(conversation, "How many vacation days?")
    run(conversation, "Do vacation days expire?")
    roles = [(m["role"], m["content"]) for m in openai_llm.last_messages[1:-1]]
    assert roles == [("user", "How many vacation days?"), ("assistant", "Twenty-five vacation days [1].")]


def test_a_failed_rewrite_falls_back_to_the_subject_and_the_question(openai_llm, conversation, library, searches):
    Message.objects.create(conversation=conversation, role="user", content="How many vacation days do we get?")
    openai_llm.fail(400, message="Bad input")  # the rewrite fails; the answer request succeeds
    openai_llm.reply_text = "In March [1]."
    done = run(conversation, "When do they expire?")
    assert len(openai_llm.requests_to("/chat/completions")) == 2  # the rewrite was tried
    assert searches == ["How many vacation days do we get? When do they expire?"]
    assert done["error"] == "" and done["citations"][0]["document_id"] == library["vacation"].pk


def test_a_question_that_stands_on_its_own_is_not_rewritten(openai_llm, conversation, library, searches):
    Message.objects.create(conversation=conversation, role="user", content="Do laptops need disk encryption?")
    openai_llm.reply_text = "Twenty-five days [1]."
    run(conversation, "How many vacation days do employees get?")
    assert searches == ["How many vacation days do employees get?"]
    assert len(openai_llm.chat_messages) == 1  # the answer only


def test_after_other_questions_nothing_relevant_still_asks_the_model_nothing(openai_llm, conversation, library):
    run(conversation, "How many vacation days do employees get?")
    openai_llm.reset()
    done = run(conversation, "xylophone quarterly zeppelin")
    assert done["content"] == services.NOTHING_FOUND and done["citations"] == []
    assert openai_llm.requests == []


def test_the_answer_reports_the_tokens_the_server_counted(openai_llm, user, library):
    openai_llm.reply_text = "Twenty-five vacation days [1]."
    result = list(services.answer(user=user, question="How many vacation days?", history=[]))[-1]
    assert result["type"] == "result"
    prompt = openai_llm.last_messages
    words = sum(len(m["content"].split()) for m in prompt)  # what the loopback server reports
    assert result["usage"].totals() == {
        "prompt_tokens": words, "completion_tokens": 4, "total_tokens": words + 4, "source": "provider"}


def test_without_a_reported_usage_the_tokens_are_counted_here(openai_llm, user, library):
    openai_llm.stream_usage = False  # a server that ignores stream_options
    openai_llm.reply_text = "Twenty-five vacation days [1]."
    result = list(services.answer(user=user, question="How many vacation days?", history=[]))[-1]
    assert result["usage"].uncounted  # counted only when asked (the page never asks)
    usage = result["usage"].totals()
    expected = sum(prompting.count_tokens(m["content"]) + 3 for m in openai_llm.last_messages) + 3
    assert usage["prompt_tokens"] == expected and usage["completion_tokens"] == prompting.count_tokens(
        "Twenty-five vacation days [1].")
    assert usage["source"] == ("tiktoken" if prompting.llm_encoding() is not None else "estimate")


def test_a_follow_ups_usage_adds_the_rewrite_to_the_answer(openai_llm, user, library):
    openai_llm.reply_text = "vacation days expire"  # the rewrite, then the answer
    history = [{"role": "user", "content": "How many vacation days do we get?"}]
    result = list(services.answer(user=user, question="When do they expire?", history=history))[-1]
    rewrite, answer = openai_llm.chat_messages
    words = sum(len(m["content"].split()) for m in rewrite + answer)
    usage = result["usage"].totals()
    assert usage["prompt_tokens"] == words and usage["completion_tokens"] == 3 + 3 and usage["source"] == "provider"


def test_extractive_answers_and_nothing_found_spend_no_tokens(extractive, user, library):
    for question in ("How many vacation days?", "xylophone quarterly zeppelin"):
        usage = list(services.answer(user=user, question=question, history=[]))[-1]["usage"].totals()
        assert usage == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "source": "none"}


def test_without_a_language_model_the_follow_up_is_searched_as_asked(extractive, conversation, library, searches):
    Message.objects.create(conversation=conversation, role="user", content="Do laptops need disk encryption?")
    run(conversation, "How many vacation days?")
    assert searches == ["How many vacation days?"]


def test_rate_limit_then_success_the_answer_arrives(openai_llm, conversation, library):
    openai_llm.fail(429, retry_after_ms=10)
    openai_llm.reply_text = "Twenty-five days [1]."
    done = run(conversation, "How many vacation days do employees get?")
    assert (done["content"], done["error"]) == ("Twenty-five days [1].", "")
    assert len(done["citations"]) == 1


@pytest.mark.parametrize(
    "failure, message",
    [
        (lambda server: server.fail(500, retry_after_ms=10, times=5), "HTTP 500"),
        (lambda server: server.fail(429, retry_after_ms=10, times=5), "rate limit"),
        (lambda server: server.delay(3.0, times=2), "did not answer in time"),
    ],
    ids=["persistent-500", "429-beyond-retries", "timeout"],
)
def test_a_failing_model_ends_with_a_clear_error_and_keeps_the_conversation(
    failure, message, openai_llm, settings, conversation, library,
):
    settings.LLM_TIMEOUT_SECONDS = 0.3
    failure(openai_llm)
    done = run(conversation, "How many vacation days do employees get?")
    assert message in done["error"] and done["citations"] == []
    question, answer = Conversation.objects.get(pk=conversation.pk).messages.all()
    assert question.content == "How many vacation days do employees get?"
    assert answer.error == done["error"] and answer.content == ""
    # The failed turn (no content) is left out of the next question's history; the question is kept.
    assert services.history_of(conversation) == [
        {"role": "user", "content": "How many vacation days do employees get?"},
    ]


def test_extractive_backend_quotes_passages_with_citations_and_a_note(extractive, conversation, library):
    done = run(conversation, "How many vacation days do employees get?")
    assert "> Employees receive twenty-five vacation days per year. [1]" in done["content"]
    assert llm.NO_LLM_NOTE in done["content"]
    assert [c["document_id"] for c in done["citations"]] == [library["vacation"].pk]
    assert Message.objects.get(pk=done["message_id"]).backend == "extractive"


def test_a_conversations_collection_restricts_retrieval(extractive, user, collection, library):
    other = Collection.objects.create(name="Contractors", owner=user)
    theirs = add(user, other, "contractors", "Contractors receive no paid vacation days.")
    done = run(Conversation.objects.create(owner=user, collection=other), "How many vacation days?")
    assert {c["document_id"] for c in done["citations"]} == {theirs.pk}


def test_answers_never_cite_collections_the_user_cannot_read(extractive, user, other_user, library):
    private = Collection.objects.create(name="Mallory's", owner=other_user)
    secret = add(other_user, private, "secret", "Mallory's vacation days: forty vacation days per year.")
    mine = run(Conversation.objects.create(owner=user), "How many vacation days per year?")
    assert mine["citations"] and secret.pk not in {c["document_id"] for c in mine["citations"]}
    theirs = run(Conversation.objects.create(owner=other_user), "How many vacation days per year?")
    assert {c["document_id"] for c in theirs["citations"]} == {secret.pk}


def test_a_question_that_cannot_be_embedded_ends_with_a_clear_error(
    extractive, openai_server, settings, conversation, library,
):
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_MODEL = "text-embedding-3-small"
    settings.OPENAI_BASE_URL = openai_server.url
    settings.EMBEDDING_MAX_RETRIES = 0
    openai_server.fail(503)
    done = run(conversation, "How many vacation days do employees get?")
    assert done["error"] == f"The documents could not be searched: {EmbeddingError.default_message}"
    assert done["citations"] == [] and done["content"] == ""
    assert conversation.messages.filter(role="user").count() == 1


@pytest.mark.django_db(transaction=True)
def test_no_database_connection_is_held_while_the_model_streams(openai_llm, user, library):
    from django.db import connection

    openai_llm.reply_text = "Twenty-five days [1]."
    conversation = Conversation.objects.create(owner=user)
    events = services.ask(conversation=conversation, question="How many vacation days do employees get?")

    assert next(events)["type"] == "token"
    # Handed back (to the pool, under the web server) for the seconds a model takes; saving takes one again.
    assert connection.connection is None
    done = list(events)[-1]
    assert done["type"] == "done" and done["content"] == "Twenty-five days [1]." and done["citations"]
    assert list(conversation.messages.values_list("role", flat=True)) == ["user", "assistant"]
