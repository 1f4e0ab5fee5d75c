"""A language model configured: the chat page's written answer, behind the same relevance gate."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from chat import prompting, services
from chat.models import Conversation
from tests.documents_factory import add_text_document as add

pytestmark = pytest.mark.django_db

POLICY = "Employees receive twenty-five vacation days per year. Unused vacation days expire in March."


@pytest.fixture
def llm(llm, settings):
    settings.LLM_MAX_RETRIES = 0
    return llm


@pytest.fixture
def page(client, user, collection):
    add(user, collection, "vacation-policy", POLICY)
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)

    def ask(question: str) -> dict:
        response = client.post(reverse("chat:ask", args=[conversation.pk]), {"question": question})
        body = b"".join(response.streaming_content).decode()
        events = [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]
        assert events[-1]["type"] == "done", events[-1]
        return events[-1]

    return ask


def test_nothing_relevant_on_the_page_costs_no_model_call(llm, page):
    done = page("xylophone quarterly zeppelin")
    assert done["content"] == services.NOTHING_FOUND and done["citations"] == [] and done["error"] == ""
    assert llm.requests == []  # not a rewrite, not an answer


def test_the_written_answer_is_asked_to_cite_each_claim_and_its_citations_are_kept(llm, page):
    llm.reply_text = "Twenty-five days a year [1]. They expire in March [1]."
    done = page("How many vacation days do employees receive?")
    [request] = llm.chat_messages
    assert request[0] == {"role": "system", "content": prompting.SYSTEM_PROMPT}
    assert POLICY in request[-1]["content"]
    assert done["content"] == llm.reply_text and [c["index"] for c in done["citations"]] == [1]
