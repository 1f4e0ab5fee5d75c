"""chat/extractive.py: the answer leads with the sentence that answers; nothing relevant gets one sentence.

Small generated documents, the hashing embedding backend (conftest), real PostgreSQL.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from chat import extractive, llm, services
from chat.models import Conversation
from core.models import ApiToken
from documents.models import Collection
from documents.search import Hit
from tests.documents_factory import add_text_document as add


def hit(i: int, text: str, *, similarity: float | None = None, heading: str = "") -> Hit:
    return Hit(chunk_id=i, document_id=100 + i, document_title=f"Doc {i}", page=None, heading=heading, text=text,
               score=1.0, similarity=similarity)


def answer_of(question: str, hits: list[Hit]) -> str:
    return "".join(extractive.answer(question, hits))


def first_line(text: str) -> str:
    return text.split("\n\n", 1)[0]


# A page of a report as PDFs give it: a page number, the company's name, a list marker, then the facts.
REPORT_PAGE = (
    "17\n\nACME CORPORATION\n\nACCOUNTING RECORDS a. The company keeps its accounting records in Lyon.\n"
    "- b.\n# Warehouse\nPage 3 of 10\n"
    "The annual report is published in April. The warehouse closes at noon on Fridays."
)


def test_fragments_that_state_nothing_are_dropped():
    sentences = [s.text for s in extractive.split(REPORT_PAGE, 1)]
    assert sentences == [
        "The company keeps its accounting records in Lyon.",
        "The annual report is published in April.",
        "The warehouse closes at noon on Fridays.",
    ]


@pytest.mark.parametrize("fragment", [
    "7", "17 18 19", "Page 12", "Page 3 of 10", "ACCOUNTING RECORDS", "a.", "- b.", "(iv)", "## Vacation",
    "Table of contents", "© 2024 ACME Corporation. All rights reserved.", "Annual Report 2024",
])
def test_a_fragment_alone_is_no_statement(fragment):
    assert extractive.split(fragment, 1) == []


def test_list_items_are_quoted_without_their_marker():
    text = "Travel rules:\n1. Employees book trains for trips under four hours.\n- Hotels cost at most 150 EUR."
    assert [s.text for s in extractive.split(text, 1)] == [
        "Employees book trains for trips under four hours.", "Hotels cost at most 150 EUR.",
    ]


def test_code_blocks_and_table_rows_are_kept_whole():
    code = "```bash\npip install widget\nwidget --init --force\n```"
    text = f"Install it with two commands.\n\n{code}\n\n| Plan | Price |\n|---|---|\n| Basic | 10 EUR a month |"
    units = [(s.kind, s.text) for s in extractive.split(text, 1)]
    assert ("code", code) in units
    assert ("table", "| Basic | 10 EUR a month |") in units and ("table", "| Plan | Price |") in units
    answer = answer_of("widget install init command", [hit(1, text)])
    assert code in answer  # the block's lines stay lines, not one flattened line


def test_the_answering_sentence_leads_even_from_a_later_passage():
    hits = [
        hit(1, "ACME CORPORATION\n\n17\n\nThe company was founded in 1990 by two engineers in Lyon."),
        hit(2, "Our offices are open on weekdays. Visitors sign in at the front desk."),
        hit(3, REPORT_PAGE),
    ]
    answer = answer_of("When does the warehouse close on Fridays?", hits)
    assert first_line(answer) == "> The warehouse closes at noon on Fridays. [3]"
    assert "ACME CORPORATION" not in answer and "> 17" not in answer and "a. " not in answer
    assert f"{extractive.MORE} [1], [2]." in answer  # the other passages stay cited
    assert answer.endswith(llm.NO_LLM_NOTE)


def test_a_repeated_sentence_is_quoted_once():
    repeated = "Unused vacation days expire at the end of March."
    hits = [
        hit(1, f"{repeated} Employees receive twenty-five vacation days per year."),
        hit(2, f"Vacation rules. {repeated}"),
        hit(3, f"{repeated.upper()[:-1].capitalize()}!  Ask HR about vacation days."),
    ]
    answer = answer_of("When do unused vacation days expire?", hits)
    assert answer.lower().count("expire at the end of march") == 1
    assert first_line(answer) == f"> {repeated} [1]"


def test_with_embedded_candidates_the_answering_sentence_still_leads_and_paraphrases_are_quoted_once():
    hits = [
        hit(1, "ACME CORPORATION\n\n17\n\nThe company was founded in 1990 by two engineers in Lyon."),
        hit(2, "The warehouse closes at noon on Fridays. The warehouse closes at noon on Fridays, always."),
        hit(3, REPORT_PAGE),
    ]
    answer = "".join(extractive.answer("When does the warehouse close on Fridays?", hits, candidates=8))
    assert first_line(answer) == "> The warehouse closes at noon on Fridays. [2]"
    assert answer.count("closes at noon") == 1  # the near-duplicates (same words, cosine >= 0.9) are left out


def test_the_answer_is_deterministic():
    hits = [hit(i, f"Employees in office {i} receive {20 + i} vacation days per year.") for i in range(1, 7)]
    answers = {answer_of("How many vacation days do employees receive?", hits) for _ in range(3)}
    assert len(answers) == 1


def test_footnote_marks_are_left_out_of_quoted_sentences():
    hits = [hit(1, "Microsoft was founded by Bill Gates and Paul Allen on April 4, 1975.[18] It later moved to "
                   "Redmond, Washington.[19][20] The deal was signed with IBM[14]:\u200a228 in August 1981.")]
    answer = answer_of("When was Microsoft founded by Bill Gates and Paul Allen?", hits)
    assert first_line(answer) == "> Microsoft was founded by Bill Gates and Paul Allen on April 4, 1975. [1]"
    sentences = [s.text for s in extractive.split(hits[0].text, 1)]
    assert sentences[1:] == ["It later moved to Redmond, Washington.", "The deal was signed with IBM in August 1981."]


@pytest.mark.parametrize("sentence", [
    "Pretangles became tangles that progressed in parallel with NFT Stages I to VI.",
    "Twelve of the patients were infected with hepatitis B.",
    "The trial enrolled volunteers who were at least aged 65.",
])
def test_a_sentence_ending_on_a_numeral_or_letter_keeps_its_last_word(sentence):
    assert [s.text for s in extractive.split(f"{sentence} The next sentence is here.", 1)][0] == sentence


@pytest.mark.shared
def test_a_scifact_abstract_split_into_passages_is_quoted_in_whole_sentences():
    import json

    from documents.chunking import chunk_sections
    from documents.parsing import Section
    from tests.conftest import require_shared

    corpus = require_shared("data/scifact/corpus.jsonl")
    with corpus.open(encoding="utf-8") as handle:
        row = next(row for row in map(json.loads, handle) if row["_id"] == "739734")
    chunks = chunk_sections([Section(text=row["text"])])
    hits = [hit(i, draft.text) for i, draft in enumerate(chunks, start=1)]
    sentences = [s.text for h in hits for s in extractive.split(h.text, 1)]
    assert not [text for text in sentences if text[:1].islower()]  # no passage's cut-off first words
    whole = ("Pretangles gradually became argyrophilic neurofibrillary tangles (NFTs) that progressed in parallel "
             "with NFT Stages I to VI.")
    assert whole in sentences
    answer = answer_of("NFTs progressed in parallel with NFT stages", hits)
    assert first_line(answer).startswith(f"> {whole} [")


def test_the_documents_title_atop_its_first_passage_is_not_quoted_as_the_answer():
    title = "Effect of physical activity on cognitive function in older adults at risk for Alzheimer disease."
    text = f"{title}\n\nPhysical activity improved cognition modestly over 18 months in older adults."
    passage = Hit(chunk_id=1, document_id=101, document_title=title, page=None, heading="", text=text, score=1.0)
    answer = answer_of("Does physical activity improve cognitive function in Alzheimer disease?", [passage])
    assert first_line(answer) == "> Physical activity improved cognition modestly over 18 months in older adults. [1]"
    assert title not in answer


MINILM = extractive.GATES["sentence-transformers/all-MiniLM-L6-v2"]


def test_the_gate_needs_a_similar_passage_or_the_questions_rare_words():
    vacation = [hit(1, "Employees receive twenty-five vacation days per year.", similarity=0.35)]
    assert extractive.is_relevant("How many vacation days do employees receive?", vacation, MINILM)
    # As similar, but the word the question is about occurs nowhere: not answered.
    assert not extractive.is_relevant("What is the capital of Mongolia?", vacation, MINILM)
    # Dissimilar passages are not answered from, whatever words they share.
    assert not extractive.is_relevant("vacation days", [hit(1, "Vacation days.", similarity=0.05)], MINILM)
    # Very similar passages are relevant whatever their words.
    leave = [hit(1, "Time off: 25 days.", similarity=0.8)]
    assert extractive.is_relevant("How much paid leave is there?", leave, MINILM)
    assert not extractive.is_relevant("anything", [], MINILM)


def test_a_common_word_the_passages_lack_does_not_outweigh_the_rare_ones():
    policy = [hit(1, "Employees book trains for trips under four hours.")]
    assert extractive.is_relevant("Which trips go by train?", policy, extractive.WORDS_ONLY)
    assert not extractive.is_relevant("Which planets go around Jupiter?", policy, extractive.WORDS_ONLY)


# Through the service, the chat page and the OpenAI-compatible API, across every collection.

TEXTS = {
    "vacation": "Employees receive twenty-five vacation days per year. Unused vacation days expire in March.",
    "security": "Laptops must use full disk encryption. The screen locks after five minutes without input.",
    "kitchen": "The office kitchen is cleaned every Friday afternoon by the facilities team.",
    "novel": "The captain looked at the grey sea. Nobody on the ship spoke of the storm that night.",
}
OFF_TOPIC = "What is the population of Mongolia?"
GIBBERISH = "flurbo gwendle zaxxipop?"




@pytest.fixture
def library(user, collection, settings):
    settings.LLM_BACKEND = "extractive"
    books = Collection.objects.create(name="Books", owner=user)
    return {name: add(user, books if name == "novel" else collection, name, text) for name, text in TEXTS.items()}


def ask(user, question):
    return list(services.ask(conversation=Conversation.objects.create(owner=user), question=question))[-1]


@pytest.mark.django_db
def test_the_service_leads_with_the_answer_and_keeps_the_other_sources(user, library):
    done = ask(user, "When do unused vacation days expire?")
    assert first_line(done["content"]) == "> Unused vacation days expire in March. [1]"
    assert done["citations"][0]["document_id"] == library["vacation"].pk


@pytest.mark.django_db
@pytest.mark.parametrize("question", [OFF_TOPIC, GIBBERISH])
def test_an_unanswerable_question_across_all_collections_gets_one_sentence_and_no_citations(user, library, question):
    done = ask(user, question)
    assert done["content"] == services.NOTHING_FOUND and done["citations"] == []
    assert llm.NO_LLM_NOTE not in done["content"] and "[1]" not in done["content"]
    assert done["content"].count(". ") == 0 and done["content"].endswith(".")  # one sentence


@pytest.mark.django_db
def test_the_chat_page_shows_nothing_found_without_the_quoting_note(client, user, library):
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)
    response = client.post(reverse("chat:ask", args=[conversation.pk]), {"question": GIBBERISH})
    body = b"".join(response.streaming_content).decode()
    done = json.loads(body.strip().split("data: ")[-1])
    assert done["type"] == "done" and done["citations"] == []
    assert "could not find anything" in done["html"]
    assert "quotes the most relevant passages" not in done["html"] and 'class="cite"' not in done["html"]


@pytest.mark.django_db
def test_the_openai_api_says_nothing_found_with_empty_citations(client, user, library):
    _, token = ApiToken.issue(user=user)
    for question, cited in ((OFF_TOPIC, False), ("How many vacation days do employees receive?", True)):
        response = client.post(
            "/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": question}]},
            content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        body = response.json()
        assert response.status_code == 200, body
        content = body["choices"][0]["message"]["content"]
        if cited:
            assert content.startswith("> Employees receive twenty-five vacation days per year. [1]")
            assert body["citations"][0]["document_id"] == library["vacation"].pk
        else:
            assert content == services.NOTHING_FOUND and body["citations"] == []
