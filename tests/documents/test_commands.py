"""Management commands: create_api_token, import_beir, evaluate_retrieval."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.models import ApiToken, hash_token
from documents.models import Document

pytestmark = pytest.mark.django_db

CORPUS = [
    {"_id": "d1", "title": "Lighthouses", "text": "Lighthouse keepers tended the lamp through stormy nights."},
    {"_id": "d2", "title": "Bees", "text": "Honey bees communicate the direction of flowers by dancing."},
    {"_id": "d3", "title": "Volcanoes", "text": "Basaltic lava flows from shield volcanoes such as Mauna Loa."},
    {"_id": "d4", "title": "Glaciers", "text": "Glaciers carve U-shaped valleys as they slowly advance."},
]
QUERIES = [
    {"_id": "q1", "text": "How do bees tell each other where flowers are?"},
    {"_id": "q2", "text": "lava from shield volcanoes"},
    {"_id": "q3", "text": "a question nobody judged"},
]


@pytest.fixture
def beir(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(row) for row in CORPUS) + "\n")
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(row) for row in QUERIES) + "\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
    return corpus, queries, qrels


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_create_api_token_prints_a_working_token_on_its_last_line(user):
    raw = run("create_api_token", user.username, "--name", "ci").strip().splitlines()[-1]
    token = ApiToken.objects.get(key_hash=hash_token(raw))
    assert token.user == user and token.name == "ci" and raw not in token.key_hash


def test_create_api_token_for_an_unknown_user_explains(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("create_api_token", "nobody")


def test_import_beir_ingests_each_row_with_its_external_id_and_skips_on_rerun(user, beir):
    corpus, _, _ = beir
    output = run("import_beir", str(corpus), "--collection", "bench", "--owner", user.username, "--mode", "inline")
    assert "imported=4 skipped=0 ready=4 failed=0" in output
    documents = Document.objects.filter(collection__name="bench", collection__owner=user)
    assert set(documents.values_list("external_id", flat=True)) == {"d1", "d2", "d3", "d4"}
    bees = documents.get(external_id="d2")
    assert bees.title == "Bees" and "dancing" in bees.chunks.get().text
    again = run("import_beir", str(corpus), "--collection", "bench", "--owner", user.username, "--mode", "inline")
    assert "imported=0 skipped=4 ready=4" in again
    assert documents.count() == 4


def test_import_beir_keeps_a_long_abstracts_title_in_its_first_passage_never_alone(user, tmp_path):
    title = "Stages of the pathologic process in Alzheimer disease: age categories from 1 to 100 years."
    text = " ".join(f"Finding {n} of the study was recorded in the brains of the examined cases." for n in range(40))
    corpus = tmp_path / "long.jsonl"
    corpus.write_text(json.dumps({"_id": "a1", "title": title, "text": text}) + "\n")
    run("import_beir", str(corpus), "--collection", "bench", "--owner", user.username, "--mode", "inline")
    document = Document.objects.get(external_id="a1")
    chunks = list(document.chunks.order_by("ordinal").values_list("text", flat=True))
    assert document.title == title and len(chunks) >= 2
    assert chunks[0].startswith(f"{title}\n\nFinding 0 of the study")
    assert title not in [chunk.strip() for chunk in chunks]


def test_import_beir_through_the_worker(celery_worker, user, beir):
    corpus, _, _ = beir
    output = run("import_beir", str(corpus), "--collection", "queued", "--owner", user.username, "--mode", "worker")
    assert "imported=4 skipped=0 ready=4 failed=0" in output


def test_evaluate_retrieval_prints_the_metrics_on_its_last_line(user, beir):
    corpus, queries, qrels = beir
    run("import_beir", str(corpus), "--collection", "bench", "--owner", user.username, "--mode", "inline")
    for mode in ("keyword", "hybrid"):
        output = run("evaluate_retrieval", "--collection", "bench", "--queries", str(queries),
                     "--qrels", str(qrels), "--mode", mode)
        last = output.strip().splitlines()[-1]
        assert last == "nDCG@10=1.0000 recall@100=1.0000", (mode, output)
        assert "queries=2" in output  # the unjudged query is left out


def test_evaluate_retrieval_names_a_missing_collection(db, beir):
    _, queries, qrels = beir
    with pytest.raises(CommandError, match="No collection named 'nope'"):
        run("evaluate_retrieval", "--collection", "nope", "--queries", str(queries), "--qrels", str(qrels))


def test_evaluate_retrieval_can_search_as_the_chat_does_with_fewer_candidates(user, beir, tmp_path):
    corpus, queries, _ = beir
    qrels = tmp_path / "two-relevant.tsv"  # q1 has a second, less similar relevant document
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\td1\t1\nq2\td3\t1\n")
    run("import_beir", str(corpus), "--collection", "bench", "--owner", user.username, "--mode", "inline")
    common = ("evaluate_retrieval", "--collection", "bench", "--queries", str(queries), "--qrels", str(qrels),
              "--mode", "vector")
    everything = run(*common)
    one = run(*common, "--candidates", "1")
    assert "candidates=300" in everything and everything.strip().endswith("recall@100=1.0000")
    # One passage per query: q1 reaches one of its two documents, q2 its one.
    assert "candidates=1" in one and one.strip().endswith("recall@100=0.7500")
