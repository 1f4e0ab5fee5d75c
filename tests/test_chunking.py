from documents.chunking import chunk_sections, count_tokens
from documents.parsing import Section


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


def test_count_tokens_uses_the_openai_tokenizer():
    assert count_tokens("hello world") == 2
