"""documents/embeddings/: the hashing, local, fastembed and OpenAI backends, batching, errors, dimensions.

The OpenAI backend runs the real ``openai`` client against a real HTTP server on loopback
(tests/openai_server.py) that answers, fails, rate-limits and stalls as scripted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile

from documents import embeddings, pipeline, services
from documents.exceptions import DimensionMismatch, EmbeddingError
from documents.models import ChunkVector, Document
from tests import documents_factory as factory

# ---------------------------------------------------------------------------------------------------------------
# hashing


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_hashing_backend_is_deterministic():
    texts = ["Vacation days roll over until March.", "The VPN needs two-factor authentication."]
    first = embeddings.HashingBackend(384).embed_documents(texts)
    second = embeddings.HashingBackend(384).embed_documents(texts)
    assert np.array_equal(first, second)
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize("dimensions", [384, 64])
def test_hashing_vectors_are_l2_normalised_with_the_configured_dimension(dimensions):
    vectors = embeddings.HashingBackend(dimensions).embed_documents(["one short text", "another, longer text " * 20])
    assert vectors.shape == (2, dimensions)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_hashing_texts_sharing_words_are_closer_than_unrelated_ones():
    backend = embeddings.HashingBackend(384)
    base, related, unrelated = backend.embed_documents([
        "employees accrue vacation days every month",
        "how many vacation days do employees get",
        "the printer on floor three is out of toner",
    ])
    assert cosine(base, related) > cosine(base, unrelated) + 0.2


def test_hashing_model_name_names_its_dimension(settings):
    settings.EMBEDDING_BACKEND = "hashing"
    backend = embeddings.get_backend()
    assert isinstance(backend, embeddings.HashingBackend)
    assert backend.model_name == "hashing-384"
    assert backend.dimensions == 384


def test_unknown_backend_name_is_refused(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.EMBEDDING_BACKEND = "word2vec"
    with pytest.raises(ImproperlyConfigured, match="word2vec"):
        embeddings.get_backend()


# ---------------------------------------------------------------------------------------------------------------
# embed_in_batches


class RecordingBackend(embeddings.HashingBackend):
    """Hashing embeddings that remember the size of every batch asked of them."""

    def __init__(self, dimensions: int = 384, max_batch: int = embeddings.MAX_BATCH):
        super().__init__(dimensions)
        self.max_batch = max_batch
        self.batches: list[int] = []

    def embed_documents(self, texts):
        self.batches.append(len(texts))
        return super().embed_documents(texts)


def numbered(count: int) -> list[str]:
    return [f"text number {i} about topic {i % 7}" for i in range(count)]


def test_embed_in_batches_sends_batches_of_batch_size_and_keeps_order():
    backend = RecordingBackend()
    texts = numbered(10)
    vectors = embeddings.embed_in_batches(backend, texts, batch_size=4)
    assert backend.batches == [4, 4, 2]
    assert np.array_equal(vectors, embeddings.HashingBackend(384).embed_documents(texts))


def test_embed_in_batches_asks_for_texts_alike_in_length_across_the_whole_call_and_keeps_the_order():
    class Lengths(RecordingBackend):
        def __init__(self):
            super().__init__()
            self.asked: list[list[int]] = []

        def embed_documents(self, texts):
            self.asked.append([len(text) for text in texts])
            return super().embed_documents(texts)

    # A long text, then short ones: sorting within each request alone would pad every request to a long one.
    texts = [("word " * length).strip() for length in (200, 3, 150, 5, 180, 2, 160, 4, 170, 1)]
    backend = Lengths()
    vectors = embeddings.embed_in_batches(backend, texts, batch_size=4)
    asked = [length for request in backend.asked for length in request]
    assert asked == sorted(len(text) for text in texts)  # shortest first, over all the requests
    assert max(backend.asked[0]) < min(backend.asked[-1])  # the short texts are asked together
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors, embeddings.HashingBackend(384).embed_documents(texts))  # rows in input order


def test_embed_in_batches_defaults_to_the_embedding_batch_size_setting(settings):
    settings.EMBEDDING_BATCH_SIZE = 3
    backend = RecordingBackend()
    embeddings.embed_in_batches(backend, numbered(7))
    assert backend.batches == [3, 3, 1]


def test_embed_in_batches_reports_progress_monotonically_up_to_the_total():
    reports = []
    embeddings.embed_in_batches(RecordingBackend(), numbered(10), batch_size=4, on_batch=lambda *a: reports.append(a))
    assert reports == [(4, 10), (8, 10), (10, 10)]


def test_embed_in_batches_of_nothing_returns_an_empty_matrix_of_the_dimension():
    backend = RecordingBackend(dimensions=384)
    reports = []
    vectors = embeddings.embed_in_batches(backend, [], batch_size=4, on_batch=lambda *a: reports.append(a))
    assert vectors.shape == (0, 384)
    assert backend.batches == [] and reports == []


def test_embed_in_batches_caps_the_batch_size_at_1000():
    backend = RecordingBackend()
    vectors = embeddings.embed_in_batches(backend, numbered(2500), batch_size=5000)
    assert backend.batches == [1000, 1000, 500]
    assert vectors.shape == (2500, 384)


def test_embed_in_batches_respects_a_backends_smaller_maximum():
    backend = RecordingBackend(max_batch=2)
    embeddings.embed_in_batches(backend, numbered(5), batch_size=64)
    assert backend.batches == [2, 2, 1]


def test_embed_in_batches_refuses_an_answer_with_the_wrong_number_of_vectors():
    class Dropping(RecordingBackend):
        def embed_documents(self, texts):
            return super().embed_documents(texts)[:-1]

    with pytest.raises(EmbeddingError) as caught:
        embeddings.embed_in_batches(Dropping(), numbered(3))
    assert "malformed" in caught.value.detail


# ---------------------------------------------------------------------------------------------------------------
# The local model, as `make install` installs it (no path, no download)

ROOT = Path(__file__).resolve().parents[2]

# Run in a child process with none of the test variables, the Hugging Face hub offline and every
# connection that leaves the machine refused: what a user's machine without internet offers.
DEFAULT_PATH_SCRIPT = """
import json, os, socket
real_connect = socket.socket.connect
def loopback_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise OSError(f"network refused in this test: {address}")
    return real_connect(self, address)
socket.socket.connect = loopback_only
import django
django.setup()
from documents import chunking, embeddings
from documents.parsing import Section
from chat import prompting
backend = embeddings.get_backend()
vectors = backend.embed_documents(["The cat sits on the mat.", "A kitten is resting on a rug.", "Tax deadlines."])
drafts = chunking.chunk_sections([Section(text="Vectors live next to their rows. " * 300)])
print(json.dumps({
    "backend": type(backend).__name__, "model": backend.model_name, "dimensions": backend.dimensions,
    "cat_kitten": float(vectors[0] @ vectors[1]), "cat_tax": float(vectors[0] @ vectors[2]),
    "chunks": len(drafts), "prompt_tokens": prompting.count_tokens("hello world"),
    "tiktoken": prompting.llm_encoding() is not None,
}))
"""


def test_the_default_local_model_loads_offline_without_any_path_or_shared_folder(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in (
        "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "EMBEDDING_MODEL_PATH", "EMBEDDING_MODEL", "EMBEDDING_BACKEND",
        "RAG_SHARED_DIR", "OPENAI_API_KEY", "OPENAI_BASE_URL",
    )}
    # An empty temporary directory: tiktoken's default cache (<tmp>/data-gym-cache) is absent there.
    env.update(DJANGO_SETTINGS_MODULE="ragsite.settings", HF_HUB_OFFLINE="1", TMPDIR=str(tmp_path),
               HOME=str(tmp_path), FASTEMBED_CACHE_PATH=str(tmp_path / "fastembed"))
    result = subprocess.run([sys.executable, "-c", DEFAULT_PATH_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "LocalModelBackend", result.stderr[-3000:]
    assert report["model"] == "sentence-transformers/all-MiniLM-L6-v2" and report["dimensions"] == 384
    assert report["cat_kitten"] > report["cat_tax"] + 0.2  # a model of meaning, not the hashing fallback
    assert report["chunks"] > 5 and report["prompt_tokens"] == 3 and report["tiktoken"] is False
    assert "NO EMBEDDING MODEL" not in result.stderr


@pytest.fixture
def tampered_files(tmp_path):
    files = embeddings.local_model_files()
    copy = tmp_path / "model.onnx"
    data = bytearray(files["model.onnx"].read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    copy.write_bytes(bytes(data))
    return {**files, "model.onnx": copy}


def test_a_tampered_model_file_is_refused_with_a_clear_error(tampered_files):
    with pytest.raises(embeddings.ModelVerificationError, match="failed verification.*will not be loaded"):
        embeddings.LocalModelBackend(dimensions=384, batch_tokens=4096, threads=1, files=tampered_files)


def test_a_tampered_tokenizer_is_refused(tmp_path):
    files = embeddings.local_model_files()
    copy = tmp_path / "tokenizer.json"
    copy.write_text(files["tokenizer.json"].read_text().replace('"[UNK]"', '"[UNK ]"', 1))
    with pytest.raises(embeddings.ModelVerificationError, match="tokenizer.json failed verification"):
        embeddings.LocalModelBackend(dimensions=384, batch_tokens=4096, threads=1,
                                     files={**files, "tokenizer.json": copy})


def test_auto_never_falls_back_silently_from_a_tampered_model(settings, monkeypatch, tampered_files):
    settings.EMBEDDING_BACKEND = "auto"
    settings.EMBEDDING_MODEL = settings.EMBEDDING_MODEL_PATH = settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    monkeypatch.setattr(embeddings.local, "local_model_files", lambda: tampered_files)
    embeddings.registry._build.cache_clear()
    try:
        with pytest.raises(embeddings.ModelVerificationError):
            embeddings.get_backend()
    finally:
        embeddings.registry._build.cache_clear()


def test_auto_without_the_model_package_falls_back_to_hashing_loudly(settings, monkeypatch, caplog):
    settings.EMBEDDING_BACKEND = "auto"
    settings.EMBEDDING_MODEL = settings.EMBEDDING_MODEL_PATH = settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    monkeypatch.setattr(embeddings.local, "LOCAL_MODEL_PACKAGE", "no_such_model_package")
    embeddings.registry._build.cache_clear()
    try:
        assert isinstance(embeddings.get_backend(), embeddings.HashingBackend)
    finally:
        embeddings.registry._build.cache_clear()
    assert "NO EMBEDDING MODEL COULD BE LOADED" in caplog.text and "make install" in caplog.text


@pytest.fixture(scope="module")
def local_model():
    return embeddings.LocalModelBackend(dimensions=384, batch_tokens=4096, threads=1)


def test_local_model_batches_are_bounded_by_padded_tokens_and_keep_the_input_order(local_model, monkeypatch):
    texts = [("word " * length).strip() for length in (300, 3, 120, 40, 7, 250, 1, 90) * 4]
    whole = local_model.embed_documents(texts)
    shapes = []
    run = local_model.session.run

    def recording(outputs, feeds):
        shapes.append(feeds["input_ids"].shape)
        return run(outputs, feeds)

    small = embeddings.LocalModelBackend.__new__(embeddings.LocalModelBackend)
    small.__dict__.update(local_model.__dict__, batch_tokens=600)
    monkeypatch.setattr(local_model.session, "run", recording, raising=False)
    try:
        bounded = small.embed_documents(texts)
    finally:
        monkeypatch.undo()
    assert len(shapes) > 3 and all(rows * width <= 600 for rows, width in shapes)
    assert max(width for _, width in shapes) == embeddings.LOCAL_MODEL_MAX_TOKENS  # 300 words are cut at 256
    np.testing.assert_allclose(bounded, whole, atol=1e-5)
    single = np.stack([local_model.embed_query(text) for text in texts[:8]])
    np.testing.assert_allclose(whole[:8], single, atol=1e-5)


def test_the_local_model_takes_a_whole_document_in_one_call_and_reports_each_token_batch(local_model, monkeypatch):
    # Requests of EMBEDDING_BATCH_SIZE texts would cut its token batches short at each request's end.
    texts = [("word " * length).strip() for length in (300, 3, 120, 40, 7, 250, 1, 90) * 10]
    calls, reports = [], []
    whole = local_model.embed_documents(texts)
    embed = local_model.embed_with_progress
    monkeypatch.setattr(local_model, "embed_with_progress", lambda t, on: calls.append(len(t)) or embed(t, on))
    vectors = embeddings.embed_in_batches(local_model, texts, batch_size=4,
                                          on_batch=lambda done, total: reports.append((done, total)))
    assert calls == [len(texts)]  # not 20 requests of 4
    np.testing.assert_allclose(vectors, whole, atol=1e-5)
    assert len(reports) > 1 and reports == sorted(reports) and reports[-1] == (len(texts), len(texts))


def test_local_model_embeds_a_lone_surrogate_and_an_empty_text(local_model):
    vectors = local_model.embed_documents(["a question \ud800 with a lone surrogate", ""])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()


@pytest.mark.shared
def test_the_local_model_makes_the_vectors_fastembed_made_of_the_same_model(local_model, settings, minilm_path):
    settings.EMBEDDING_BACKEND = "fastembed"
    settings.EMBEDDING_MODEL = ""
    settings.EMBEDDING_MODEL_PATH = str(minilm_path)
    texts = ["The cat sits on the mat.", "Quarterly tax filing deadlines. " * 80, "x"]
    theirs = embeddings.get_backend().embed_documents(texts)
    ours = local_model.embed_documents(texts)
    assert local_model.model_name == embeddings.get_backend().model_name  # one embedding space
    np.testing.assert_allclose((ours * theirs).sum(axis=1), 1.0, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# fastembed, on the real MiniLM model from the shared folder


@pytest.fixture
def minilm(settings, minilm_path):
    settings.EMBEDDING_BACKEND = "fastembed"
    settings.EMBEDDING_MODEL = ""
    settings.EMBEDDING_MODEL_PATH = str(minilm_path)
    return embeddings.get_backend()  # cached per configuration: the model loads once for these tests


@pytest.mark.shared
def test_fastembed_minilm_produces_384_dimensional_normalised_vectors(minilm):
    assert isinstance(minilm, embeddings.FastembedBackend)
    assert minilm.dimensions == 384
    vectors = minilm.embed_documents(["The cat sits on the mat.", "Quarterly tax filing deadlines."])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.shared
def test_fastembed_close_sentences_score_closer_than_unrelated_ones(minilm):
    cat, kitten, taxes = minilm.embed_documents([
        "The cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly tax filing deadlines.",
    ])
    # No shared content words between the first two: only a model of meaning brings them together.
    assert cosine(cat, kitten) > cosine(cat, taxes) + 0.2


@pytest.mark.shared
def test_fastembed_query_embedding_equals_the_document_embedding_of_the_same_text(minilm):
    text = "How many vacation days do new employees get?"
    document = minilm.embed_documents(["Something else entirely.", text])[1]
    np.testing.assert_allclose(minilm.embed_query(text), document, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# OpenAI, through the real client against the loopback server


@pytest.fixture
def server(openai_server, settings):
    """The loopback server, with the settings that point the openai embedding backend at it."""
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_MODEL = "text-embedding-3-small"
    settings.OPENAI_BASE_URL = openai_server.url
    settings.OPENAI_API_KEY = "test-key"
    settings.EMBEDDING_MAX_RETRIES = 3
    settings.EMBEDDING_TIMEOUT_SECONDS = 10
    yield openai_server
    # The next server may get this port again: do not hand a later test a client of this one.
    embeddings.registry._build.cache_clear()


def embedding_requests(server):
    return server.requests_to("/embeddings")


def test_openai_vectors_come_back_in_input_order_and_normalised(server):
    server.reverse_embedding_order = True  # `data` listed last-first: only `index` gives the order
    server.normalize_embeddings = False
    texts = ["first text", "second text", "third text"]
    vectors = embeddings.get_backend().embed_documents(texts)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    for row, text in zip(vectors, texts, strict=True):
        expected = np.array(server.embedding_for(text), dtype=np.float32)
        np.testing.assert_allclose(row, expected / np.linalg.norm(expected), atol=1e-6)


def test_openai_request_names_model_float_format_and_key(server):
    embeddings.get_backend().embed_documents(["hello"])
    (request,) = embedding_requests(server)
    assert request.body["model"] == "text-embedding-3-small"
    assert request.body["input"] == ["hello"]
    assert request.body["encoding_format"] == "float"
    assert request.headers["authorization"] == "Bearer test-key"


def test_openai_asks_text_embedding_3_models_for_the_column_dimension(server):
    server.embedding_dim = 1536  # the model's native size; it must shorten on request
    vectors = embeddings.get_backend().embed_documents(["hello"])
    assert embedding_requests(server)[0].body["dimensions"] == 384
    assert vectors.shape == (1, 384)


def test_openai_does_not_send_dimensions_to_other_models(server, settings):
    settings.EMBEDDING_MODEL = "nomic-embed-text"  # OpenAI answers 400 to `dimensions` for such models
    vectors = embeddings.get_backend().embed_documents(["hello"])
    (request,) = embedding_requests(server)
    assert "dimensions" not in request.body
    assert request.body["model"] == "nomic-embed-text"
    assert vectors.shape == (1, 384)


def test_openai_rate_limit_is_retried_and_then_succeeds(server):
    server.fail(429, retry_after_ms=10)
    vectors = embeddings.get_backend().embed_documents(["a", "b"])
    assert len(embedding_requests(server)) == 2
    assert vectors.shape == (2, 384)


def test_openai_server_errors_are_retried_until_success(server):
    server.fail(500, times=2)
    vectors = embeddings.get_backend().embed_documents(["a"])
    assert len(embedding_requests(server)) == 3
    assert server.pending == 0
    assert vectors.shape == (1, 384)


def test_openai_client_error_is_not_retried_and_carries_the_providers_message(server):
    server.fail(400, message="Invalid 'input': maximum context length is 8192 tokens.", code="context_length")
    with pytest.raises(EmbeddingError) as caught:
        embeddings.get_backend().embed_documents(["a"])
    assert len(embedding_requests(server)) == 1
    assert str(caught.value) == EmbeddingError.default_message  # the owner's words
    assert "HTTP 400" in caught.value.detail  # the provider's, for the operators
    assert "maximum context length is 8192 tokens" in caught.value.detail


def test_openai_persistent_server_error_gives_up_after_max_retries(server, settings):
    settings.EMBEDDING_MAX_RETRIES = 2
    server.fail(500, retry_after_ms=10, times=5)
    with pytest.raises(EmbeddingError) as caught:
        embeddings.get_backend().embed_documents(["a"])
    assert "HTTP 500" in caught.value.detail
    assert len(embedding_requests(server)) == 3  # the first attempt and two retries
    assert server.pending == 2


def test_openai_slow_server_raises_an_error_about_time(server, settings):
    settings.EMBEDDING_TIMEOUT_SECONDS = 0.5
    settings.EMBEDDING_MAX_RETRIES = 0
    server.delay(5)
    started = time.monotonic()
    with pytest.raises(EmbeddingError) as caught:
        embeddings.get_backend().embed_documents(["a"])
    assert "in time" in caught.value.detail
    assert time.monotonic() - started < 3
    assert len(embedding_requests(server)) == 1


def test_openai_unreachable_server_raises_an_error_naming_it(server, settings):
    settings.EMBEDDING_MAX_RETRIES = 0
    url = server.url
    server.close()
    with pytest.raises(EmbeddingError) as caught:
        embeddings.get_backend().embed_documents(["a"])
    assert "could not be reached" in caught.value.detail and url in caught.value.detail
    assert url not in str(caught.value)


@pytest.mark.django_db
def test_openai_model_with_a_different_dimension_raises_dimension_mismatch(server, settings):
    settings.EMBEDDING_MODEL = "nomic-embed-text"
    server.embedding_dim = 768
    with pytest.raises(DimensionMismatch) as caught:
        embeddings.embed_in_batches(embeddings.get_backend(), ["a", "b"])
    assert "administrator" in str(caught.value)
    message = caught.value.detail
    assert "768" in message and "384" in message
    assert "nomic-embed-text" in message


def test_auto_backend_with_a_base_url_resolves_to_openai(server, settings):
    settings.EMBEDDING_BACKEND = "auto"
    settings.OPENAI_API_KEY = ""  # a local OpenAI-compatible server needs no key
    assert embeddings.backend_choice() == "openai"
    backend = embeddings.get_backend()
    assert isinstance(backend, embeddings.OpenAIBackend)
    assert backend.embed_query("hello").shape == (384,)
    assert len(embedding_requests(server)) == 1


def test_get_backend_follows_changes_of_the_client_settings(server, settings):
    settings.EMBEDDING_MAX_RETRIES = 0
    settings.EMBEDDING_TIMEOUT_SECONDS = 0.5
    first = embeddings.get_backend()
    assert (first.client.max_retries, first.client.timeout) == (0, 0.5)
    settings.EMBEDDING_MAX_RETRIES = 4
    settings.EMBEDDING_TIMEOUT_SECONDS = 30
    second = embeddings.get_backend()
    assert (second.client.max_retries, second.client.timeout) == (4, 30)
    assert embeddings.get_backend() is second  # still cached per configuration


# ---------------------------------------------------------------------------------------------------------------
# the ingestion pipeline with OpenAI embeddings


def ingest_text(user, collection, tmp_path, name: str, text: str) -> Document:
    path = factory.make_text(tmp_path / name, text)
    document = services.document_create(
        owner=user, collection=collection, file=ContentFile(path.read_bytes(), name=path.name),
        filename=path.name, enqueue=False,
    )
    ingested = pipeline.document_ingest(document_id=document.pk)
    assert ingested is not None
    return ingested


@pytest.mark.django_db
def test_ingest_with_openai_embeddings_stores_chunks_named_for_the_model(server, user, collection, tmp_path):
    text = "\n\n".join(f"Section {i}: the travel policy covers trains, flights and hotels. " * 30 for i in range(4))
    document = ingest_text(user, collection, tmp_path, "travel.txt", text)
    assert document.status == Document.Status.READY, document.error
    chunks = list(document.chunks.all())
    assert document.chunk_count == len(chunks) > 1
    # In the space of the configured OpenAI model, created for it (the collection was created under it).
    spaces = ChunkVector.objects.filter(document_id=document.pk).values_list("space__backend", "space__model")
    assert set(spaces) == {("openai", "text-embedding-3-small")} and spaces.count() == len(chunks)
    embedded = sum(len(r.body["input"]) for r in embedding_requests(server))
    assert embedded == len(chunks)


@pytest.mark.django_db
def test_ingest_fails_with_a_reason_when_embeddings_are_refused_and_leaves_others_alone(
    server, user, collection, tmp_path
):
    good = ingest_text(user, collection, tmp_path, "good.txt", "Holiday policy text. " * 50)
    assert good.status == Document.Status.READY, good.error
    chunks_before = list(good.chunks.values_list("id", "text"))
    server.fail(400, message="Your organization is not allowed to use this model.", code="model_not_allowed")
    bad = ingest_text(user, collection, tmp_path, "bad.txt", "Expense reports are due monthly. " * 50)
    assert bad.status == Document.Status.FAILED
    assert bad.error == EmbeddingError.default_message
    assert bad.error_detail.startswith("The embedding service refused the request (HTTP 400")
    assert "not allowed to use this model" in bad.error_detail
    assert bad.chunks.count() == 0 and bad.progress == 0.0
    good.refresh_from_db()
    assert good.status == Document.Status.READY
    assert list(good.chunks.values_list("id", "text")) == chunks_before
