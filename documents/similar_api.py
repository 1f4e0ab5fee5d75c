"""/api/v1/documents/{id}/similar, /api/v1/chunks/{id}/similar, /api/v1/recommendations: what is near, readable."""

from datetime import date
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from ninja.errors import HttpError

from documents.recommend import interest_clear, recommendations_for
from documents.selectors import KIND_LABELS, document_for_user
from documents.similar import (
    MAX_K,
    SimilarFilters,
    chunk_for_user,
    readable_collection_exists,
    similar_documents,
    similar_passages,
)

documents_router = Router(tags=["documents"])
chunks_router = Router(tags=["search"])


class SimilarParams(Schema):
    k: int = 5
    collection: str | None = None
    type: str | None = None
    created_after: date | None = None
    created_before: date | None = None


class SimilarDocumentOut(Schema):
    document_id: int
    title: str
    collection: str
    score: float
    near_duplicate: bool


class SimilarDocuments(Schema):
    results: list[SimilarDocumentOut]


class PassageParams(Schema):
    k: int = 5


class SimilarPassageOut(Schema):
    chunk_id: int
    document_id: int
    document_title: str
    collection: str
    page: int | None
    heading: str
    text: str
    score: float


class SimilarPassages(Schema):
    results: list[SimilarPassageOut]


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise HttpError(422, f"k must be between 1 and {MAX_K}.")


@documents_router.get("/{document_id}/similar", response=SimilarDocuments)
def document_similar(request: HttpRequest, document_id: int, params: Query[SimilarParams]) -> dict[str, Any]:
    """The documents nearest this one among those the caller may read (never itself), best first.

    ``collection`` (id or name), ``type`` (pdf, docx, html, markdown, text) and ``created_after`` /
    ``created_before`` (dates) narrow them; near-duplicates (the same file, or similarity ≥ 0.98) come with
    ``near_duplicate: true``. Empty until the document is processed.
    """
    _check_k(params.k)
    if params.type and params.type not in KIND_LABELS:
        raise HttpError(422, f"type must be one of {', '.join(KIND_LABELS)}.")
    document, _ = document_for_user(request.user, document_id)
    if params.collection and not readable_collection_exists(user=request.user, reference=params.collection):
        raise HttpError(404, f"No collection {params.collection!r} that you can read.")
    filters = SimilarFilters(
        collection=params.collection or "",
        kind=params.type or "",
        created_after=params.created_after,
        created_before=params.created_before,
    )
    found = similar_documents(user=request.user, document=document, k=params.k, filters=filters)
    return {"results": [hit.__dict__ for hit in found]}


@chunks_router.get("/{chunk_id}/similar", response=SimilarPassages)
def chunk_similar(request: HttpRequest, chunk_id: int, params: Query[PassageParams]) -> dict[str, Any]:
    """More like this passage: the nearest passages of *other* documents the caller may read, best first."""
    _check_k(params.k)
    chunk = chunk_for_user(request.user, chunk_id)
    return {"results": [hit.__dict__ for hit in similar_passages(user=request.user, chunk=chunk, k=params.k)]}


recommendations_router = Router(tags=["documents"])


class RecommendationParams(Schema):
    k: int = 5


class RecommendationOut(Schema):
    document_id: int
    title: str
    collection: str
    score: float | None
    reason: str


class Recommendations(Schema):
    results: list[RecommendationOut]


class Forgotten(Schema):
    deleted: int


@recommendations_router.get("", response=Recommendations)
def recommendations(request: HttpRequest, params: Query[RecommendationParams]) -> dict[str, Any]:
    """Documents for the caller, near what they recently opened or were answered from (``reason: interest``,
    with ``score``); without a history, popular ones in their collections, then new ones (``score: null``)."""
    _check_k(params.k)
    return {"results": [hit.__dict__ for hit in recommendations_for(user=request.user, k=params.k)]}


@recommendations_router.delete("/history", response=Forgotten)
def forget_history(request: HttpRequest) -> dict[str, int]:
    """Forget the caller's reading history (opened documents, documents that answered their questions)."""
    return {"deleted": interest_clear(user=request.user)}
