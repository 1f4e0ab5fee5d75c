"""Document pages: the library (upload + live status), a document's chunks, delete."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from core import http, ratelimit, uploads
from core.http import parse_id
from documents import embeddings, services
from documents.exceptions import DuplicateDocument, UploadRejected
from documents.models import Collection
from documents.selectors import (
    document_for_user,
    documents_for_user,
    documents_progress,
    managers_only,
    progress_of,
)


@login_required
def document_list(request):
    """The library: upload form (drag and drop, several files) and every readable document."""
    if request.method == "POST":
        return _upload(request)
    documents = documents_for_user(user=request.user)
    # A list: the page reads it twice (the default name, then the suggestions), in one query.
    collections = list(Collection.objects.filter(owner=request.user))
    # Configuration advice is for administrators only; ordinary users never see it.
    embedding_info = embeddings.active_backend_info() if request.user.is_staff else None
    return render(
        request, "documents/list.html",
        {"documents": documents, "collections": collections,
         "default_collection": services.DEFAULT_COLLECTION_NAME, "embedding_info": embedding_info},
    )


def _upload(request):
    files = request.FILES.getlist("files")
    too_large = [{"name": name, "ok": False, "detail": uploads.limit_message()} for name in uploads.oversized(request)]
    wants_json = http.wants_json(request)
    if not files and not too_large:
        if wants_json:
            return JsonResponse({"results": [], "detail": "Choose at least one file."}, status=400)
        messages.error(request, "Choose at least one file.")
        return redirect("documents:list")
    try:
        collection = services.collection_for_upload(user=request.user, name=request.POST.get("collection"))
    except UploadRejected as error:  # a name no collection can have: no file is stored
        if wants_json:
            return JsonResponse({"results": [], "detail": str(error)}, status=error.status_code)
        messages.error(request, str(error))
        return redirect("documents:list")
    results = [{**result, "status": 413} for result in too_large]
    retry_after = 0  # set once the user's upload limit is reached: the remaining files are refused
    for upload in files:
        if not retry_after:
            allowed, wait = ratelimit.hit("upload", request.user)  # counted per file
            retry_after = 0 if allowed else wait
        if retry_after:
            results.append({"name": upload.name, "ok": False, "status": 429,
                            "detail": ratelimit.message("upload", retry_after)})
            continue
        try:
            document = services.document_create(
                owner=request.user, file=upload, collection=collection, filename=upload.name
            )
            # The row as the list renders it, so that the page can insert it without reloading.
            row = render_to_string("documents/_row.html", {"document": document}, request=request)
            results.append({"name": upload.name, "ok": True, "status": 202, "document": progress_of(document),
                            "row_html": row})
        except UploadRejected as error:
            result = {"name": upload.name, "ok": False, "status": error.status_code, "detail": str(error)}
            if isinstance(error, DuplicateDocument):
                result["existing_id"] = error.existing.pk
            results.append(result)
    if wants_json:
        return _upload_answer(request, results, retry_after)
    for result in results:
        if result["ok"] and result["document"]["message_kind"] == "error":  # accepted but failed at once (empty)
            messages.error(request, f"{result['name']}: {result['document']['error']}")
        elif result["ok"]:
            messages.success(request, f"{result['name']}: queued for processing.")
        else:
            messages.error(request, f"{result['name']}: {result['detail']}")
    return redirect("documents:list")


def _upload_answer(request, results: list[dict], retry_after: int) -> HttpResponse:
    """202 when a file was accepted (each file's result says what became of it); otherwise the API's error.

    Every file refused: the status the API gives that refusal (413 too large, 409 already there with
    ``existing_id``), 429 when the upload limit refused one, else 400 for different reasons; ``detail``
    has every file's reason.
    """
    statuses = {result["status"] for result in results}
    if 202 in statuses:
        status = 202
    elif 429 in statuses:
        status = 429  # trying again later may get them all in
    else:
        status = statuses.pop() if len(statuses) == 1 else 400
    body: dict = {"results": results}
    if status != 202:
        body["detail"] = " ".join(f"{result['name']}: {result['detail']}" for result in results)
    response = JsonResponse(body, status=status)
    if status == 429:
        return ratelimit.refused(request, "upload", retry_after, response=response)
    return ratelimit.with_retry_after(response, retry_after) if retry_after else response


@login_required
@require_GET
def document_status(request):
    """Status of the caller's readable documents, polled by the library page's progress bars."""
    ids = [i for i in map(parse_id, request.GET.getlist("id")) if i is not None]
    wanted = ids if "id" in request.GET else None  # ids that are none: nothing, not everything
    return JsonResponse({"documents": documents_progress(user=request.user, ids=wanted)})


@login_required
@require_GET
def document_detail(request, pk: int):
    """A document with its chunks; ``?chunk=`` highlights the one a citation points to."""
    document, _ = document_for_user(request.user, pk)
    chunks = document.chunks.only("id", "ordinal", "text", "page", "heading").order_by("ordinal")
    highlighted = request.GET.get("chunk", "")
    return render(
        request, "documents/detail.html",
        {"document": document, "chunks": chunks,
         "highlighted": parse_id(highlighted)},
    )


@login_required
@require_POST
def document_delete(request, pk: int):
    document, can_manage = document_for_user(request.user, pk)
    if not can_manage:
        messages.error(request, managers_only("delete"))
    else:
        services.document_delete(document=document, actor=request.user)
        messages.success(request, f"Deleted “{document.title}”.")
    return redirect("documents:list")


@login_required
@require_POST
def document_reingest(request, pk: int):
    """Process a document again from scratch (its uploader or the collection's owner)."""
    document, can_manage = document_for_user(request.user, pk)
    if not can_manage:
        messages.error(request, managers_only("re-ingest"))
    else:
        services.document_reingest(document=document, actor=request.user)
        messages.success(request, f"“{document.title}” queued again.")
    return redirect("documents:list")


@login_required
@require_POST
def document_cancel(request, pk: int):
    """Cancel a queued or running ingestion (its uploader or the collection's owner); re-ingest runs it again."""
    document, can_manage = document_for_user(request.user, pk)
    if not can_manage:
        status, detail = 403, managers_only("cancel the processing of")
    elif services.document_cancel(document=document, actor=request.user):
        status, detail = 200, f"Cancelled the processing of “{document.title}”."
    else:
        status, state = 409, document.get_status_display().lower()
        detail = f"“{document.title}” had already finished ({state}); nothing to cancel."
    if http.wants_json(request):
        return JsonResponse({"detail": detail, "document": progress_of(document)}, status=status)
    (messages.success if status == 200 else messages.error)(request, detail)
    return redirect("documents:list")
