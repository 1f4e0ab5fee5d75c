import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from documents import embeddings
from documents.chunking import chunk_sections, count_tokens, max_chunk_tokens
from documents.parsing import Section


def model_reads(text: str) -> int:
    """Word pieces the embedding model is given for ``text``, with [CLS] and [SEP]."""
    return len(embeddings.local_tokenizer().encode(text).ids)


def test_chunks_respect_the_token_budget_and_keep_page_and_heading():
    paragraph = "PostgreSQL keeps vectors next to the rows they describe. " * 40
    sections = [
        Section(text=paragraph, page=3, heading_path=("Guide", "Storage")),
        Section(text="A short closing note.", page=4),
    ]
    drafts = chunk_sections(sections, chunk_size=100, chunk_overlap=20)
    assert len(drafts) > 3
    assert all(draft.token_count <= 100 for draft in drafts)
    assert [draft.ordinal for draft in drafts] == list(range(len(drafts)))
    assert drafts[0].page == 3 and drafts[0].heading == "Guide > Storage"
    assert drafts[-1].page == 4 and drafts[-1].heading == ""
    assert drafts[0].embedding_text.startswith("Guide > Storage\n")


def test_consecutive_chunks_overlap():
    words = " ".join(f"word{i}" for i in range(600))
    drafts = chunk_sections([Section(text=words)], chunk_size=80, chunk_overlap=20)
    first_tail = drafts[0].text.split()[-3:]
    assert all(word in drafts[1].text.split() for word in first_tail)


def test_offsets_point_back_into_the_joined_text():
    sections = [Section(text="Alpha beta gamma. " * 50), Section(text="Delta epsilon zeta. " * 50)]
    joined = "\n\n".join(section.text for section in sections)
    for draft in chunk_sections(sections, chunk_size=60, chunk_overlap=10):
        assert joined[draft.char_start : draft.char_end] == draft.text


def test_code_fence_is_not_split_when_it_fits():
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})" for i in range(12)) + "\n```"
    text = "Intro paragraph about the code.\n\n" + code + "\n\nAfterwards some words."
    drafts = chunk_sections([Section(text=text)], chunk_size=200, chunk_overlap=0)
    holding = [d for d in drafts if "value_0" in d.text]
    assert len(holding) == 1 and "value_11" in holding[0].text


def test_count_tokens_counts_the_embedding_models_word_pieces():
    assert count_tokens("hello world") == 2
    assert count_tokens("unbelievably") == len(embeddings.local_tokenizer().encode("unbelievably").ids) - 2
    assert count_tokens("数据库") == 3


def test_a_chunk_size_larger_than_the_model_reads_is_held_to_the_model(settings):
    settings.CHUNK_SIZE_TOKENS = 1000
    settings.CHUNK_OVERLAP_TOKENS = 50
    text = "Vectors are stored next to the rows they describe, in PostgreSQL. " * 200
    drafts = chunk_sections([Section(text=text, heading_path=("Manual", "Storage engine"))])
    assert max(model_reads(draft.embedding_text) for draft in drafts) <= embeddings.LOCAL_MODEL_MAX_TOKENS
    assert max(draft.token_count for draft in drafts) > 200  # held to the model, not far below it


TEXT = st.lists(
    st.one_of(
        st.sampled_from(["the", "vector", "PostgreSQL", "naïve", "数据库", "ünïcödé", "3.14159", "e-mail",
                         "https://example.com/a/very/long/path?with=query&and=more", "\n\n", "\n", "#", "```"]),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=50, max_size=400),  # no separator inside
    ),
    min_size=1, max_size=400,
).map(" ".join)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, heading=st.text(max_size=60), size=st.sampled_from([32, 128, 256, 400]))
def test_no_chunk_ever_holds_more_than_the_model_reads(text, heading, size):
    drafts = chunk_sections([Section(text=text, heading_path=(heading,) if heading else ())],
                            chunk_size=size, chunk_overlap=size // 5)
    limit = max_chunk_tokens()
    for draft in drafts:
        assert draft.token_count == count_tokens(draft.text) <= min(size, limit)
        assert model_reads(draft.embedding_text) <= embeddings.LOCAL_MODEL_MAX_TOKENS


def test_a_title_line_before_a_long_paragraph_is_part_of_the_first_chunk_not_a_chunk_of_its_own():
    title = "Effect of physical activity on cognitive function in older adults: a randomized trial."
    paragraph = " ".join(f"Sentence {n} of the abstract reports one more finding about the trial." for n in range(60))
    drafts = chunk_sections([Section(text=f"{title}\n\n{paragraph}")], chunk_size=120, chunk_overlap=20)
    assert len(drafts) > 2
    assert drafts[0].text.startswith(f"{title}\n\nSentence 0 of")
    assert all(draft.text.strip() != title for draft in drafts)
    assert all(draft.token_count <= 120 for draft in drafts)
    assert drafts[-1].text.endswith("Sentence 59 of the abstract reports one more finding about the trial.")


@pytest.mark.shared
def test_a_scifact_abstract_with_its_title_has_no_passage_that_is_only_the_title():
    import json

    from tests.conftest import require_shared

    with require_shared("data/scifact/corpus.jsonl").open(encoding="utf-8") as handle:
        rows = [row for row in map(json.loads, handle) if row["_id"] in ("739734", "4983")]
    for row in rows:
        text = f"{row['title']}\n\n{row['text']}"  # as manage.py import_beir writes it
        drafts = chunk_sections([Section(text=text)])
        assert drafts[0].text.startswith(f"{row['title']}\n\n{row['text'][:40]}")
        assert all(draft.text.strip() != row["title"] for draft in drafts)
        assert drafts[-1].text.endswith(row["text"][-60:])
        for draft in drafts:
            assert text[draft.char_start : draft.char_end] == draft.text
