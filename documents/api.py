"""/api/v1/documents: upload (202 at once), status, list, delete, cancel, re-ingest."""

from ninja import File, Form, Router, Schema, Status
from ninja.files import UploadedFile

from core import ratelimit, uploads
from documents import services
from documents.exceptions import DuplicateDocument, UploadRejected
from documents.models import Document
from documents.selectors import document_for_user, documents_for_user, managers_only

router = Router(tags=["documents"])


class Accepted(Schema):
    id: int
    status: str
    collection: str
    collection_created: bool  # this upload created the collection (a name the caller had none of)
    message: str  # "New collection “…” created." when it did, else ""


class DocumentOut(Schema):
    id: int
    title: str
    status: str
    progress: float
    chunk_count: int
    error: str
    collection: str
    created_at: str

    @staticmethod
    def resolve_collection(obj: Document) -> str:
        return obj.collection.name

    @staticmethod
    def resolve_created_at(obj: Document) -> str:
        return obj.created_at.isoformat()


class Problem(Schema):
    detail: str
    existing_id: int | None = None


@router.post("", response={202: Accepted, 409: Problem, 413: Problem, 415: Problem, 400: Problem, 429: Problem})
def upload_document(
    request, file: File[UploadedFile | None] = None, collection: Form[str | None] = None,
):
    """Store the file and queue its ingestion; poll GET /documents/{id} for progress.

    The file goes to the caller's collection named ``collection`` (default "My documents"); a name they have
    no collection of creates one, and the answer says so: ``collection_created`` and ``message``.

    Uploads count against the caller's limit (``RATE_LIMIT_UPLOAD``): beyond it, 429 with ``Retry-After``.
    A file of a type that cannot be read (a legacy .doc, a spreadsheet, an image …) is refused at once:
    415, with the supported formats.
    """
    if uploads.oversized(request):
        return Status(413, {"detail": uploads.limit_message()})
    if file is None:
        return Status(400, {"detail": "Send the document as the multipart field `file`."})
    allowed, retry_after = ratelimit.hit("upload", request.user)
    if not allowed:
        return ratelimit.refused(request, "upload", retry_after)
    try:
        target, created = services.upload_collection(user=request.user, name=collection)
        document = services.document_create(owner=request.user, file=file, collection=target, filename=file.name)
    except DuplicateDocument as error:
        return Status(409, {"detail": str(error), "existing_id": error.existing.pk})
    except UploadRejected as error:
        return Status(error.status_code, {"detail": str(error)})
    return Status(202, {"id": document.pk, "status": document.status, "collection": target.name,
                        "collection_created": created,
                        "message": services.collection_created_message(target) if created else ""})


@router.get("", response=list[DocumentOut])
def list_documents(request):
    """Documents in every collection the caller may read, newest first."""
    return documents_for_user(user=request.user)


@router.get("/{document_id}", response=DocumentOut)
def get_document(request, document_id: int):
    document, _ = document_for_user(request.user, document_id)
    return document


@router.delete("/{document_id}", response={204: None, 403: Problem})
def delete_document(request, document_id: int):
    """Delete a document and its chunks (its uploader or the collection's owner)."""
    document, can_manage = document_for_user(request.user, document_id)
    if not can_manage:
        return Status(403, {"detail": managers_only("delete")})
    services.document_delete(document=document, actor=request.user)
    return Status(204, None)


@router.post("/{document_id}/cancel", response={200: DocumentOut, 403: Problem, 409: Problem})
def cancel_document(request, document_id: int):
    """Cancel a queued or running ingestion (its uploader or the collection's owner): status `cancelled`.

    A running task stops at its next stage or embedding batch and stores nothing. 409 when the document had
    already finished. Re-ingesting it starts again from scratch.
    """
    document, can_manage = document_for_user(request.user, document_id)
    if not can_manage:
        return Status(403, {"detail": managers_only("cancel the processing of")})
    if not services.document_cancel(document=document, actor=request.user):
        return Status(409, {"detail": f"The document had already finished ({document.status}); nothing to cancel."})
    return Status(200, document)


@router.post("/{document_id}/reingest", response={202: DocumentOut, 403: Problem})
def reingest_document(request, document_id: int):
    """Process a document again from scratch (its uploader or the collection's owner): status `queued`.

    Retries a failed or cancelled ingestion, or re-embeds a ready document; its chunks are replaced when the
    new run stores. Poll GET /documents/{id} for progress.
    """
    document, can_manage = document_for_user(request.user, document_id)
    if not can_manage:
        return Status(403, {"detail": managers_only("re-ingest")})
    services.document_reingest(document=document, actor=request.user)
    return Status(202, document)
