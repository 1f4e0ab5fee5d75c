"""Document pages: the library (upload, live status, search, filters, bulk actions), a document's chunks,
its original file, delete / re-ingest / cancel."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core import http, ratelimit, uploads
from core.http import parse_id
from core.replicas import reads_from_replica
from documents import embeddings, services
from documents.exceptions import DuplicateDocument, UploadRejected
from documents.models import Collection, Document, Interest
from documents.recommend import interest_clear, interest_record, recommendations_for
from documents.selectors import (
    BULK_ACTIONS,
    KIND_LABELS,
    REINGEST_CANNOT_HELP,
    LibraryFilters,
    bulk_selection,
    chunk_page,
    document_for_user,
    documents_progress,
    download_type,
    library_collections,
    library_page,
    managers_only,
    progress_of,
    reingest_helps,
    reingest_offered,
    row_facts,
    upload_collection_default,
)
from documents.similar import chunk_for_user, similar_documents, similar_passages

# How many similar documents a document's page lists, similar passages the "more like this" page, and
# recommended documents the library's first page.
SIMILAR_ON_PAGE = 5
SIMILAR_PASSAGES_ON_PAGE = 10
RECOMMENDED_ON_PAGE = 5
# The library's query-string parameters: kept across the page's controls (filters, sort, paging, bulk actions).
LIBRARY_PARAMETERS = ("q", "collection", "status", "type", "sort", "page")


@login_required
@reads_from_replica  # its GET (the upload is a POST, which stays on the primary)
def document_list(request):
    """The library: upload form (drag and drop, several files) and the readable documents, a page at a time."""
    if request.method == "POST":
        return _upload(request)
    filters = LibraryFilters.from_query(request.GET)
    page = library_page(user=request.user, filters=filters, page=request.GET.get("page"))
    collections = library_collections(user=request.user)
    upload_to = upload_collection_default(user=request.user, collections=collections, filters=filters)
    # Configuration advice is for administrators only; ordinary users never see it.
    embedding_info = embeddings.active_backend_info() if request.user.is_staff else None
    # On the library's first page only: a search, a filter or paging is about something else.
    first = not filters.active and page.number == 1
    recommended = recommendations_for(user=request.user, k=RECOMMENDED_ON_PAGE) if first else []
    return render(
        request, "documents/list.html",
        {"page": page, "documents": page.object_list, "filters": filters,
         "collections": collections, "own_collections": [c for c in collections if c.owner_id == request.user.pk],
         "statuses": Document.Status.choices, "kinds": KIND_LABELS.items(),
         "here": _library_query(request.GET), "here_params": _library_parameters(request.GET),
         "upload_to": upload_to.name if upload_to else services.DEFAULT_COLLECTION_NAME,
         "embedding_info": embedding_info,
         "recommended": recommended, "has_history": any(r.reason == "interest" for r in recommended)},
    )


def _library_parameters(query) -> list[tuple[str, str]]:
    """The library's own parameters of a query string or form: nothing else is carried along."""
    return [(key, query[key]) for key in LIBRARY_PARAMETERS if query.get(key)]


def _library_query(query) -> str:
    return urlencode(_library_parameters(query))


def _back_to_library(query: str):
    return redirect(reverse("documents:list") + (f"?{query}" if query else ""))


def _upload(request):
    files = request.FILES.getlist("files")
    too_large = [{"name": name, "ok": False, "detail": uploads.limit_message()} for name in uploads.oversized(request)]
    wants_json = http.wants_json(request)
    if not files and not too_large:
        if wants_json:
            return JsonResponse({"results": [], "detail": "Choose at least one file."}, status=400)
        messages.error(request, "Choose at least one file.")
        return redirect("documents:list")
    collection, created = None, False  # only files over the limit: nothing is stored, no collection made
    try:
        if files:
            collection, created = services.upload_collection(user=request.user, name=request.POST.get("collection"))
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
            row = render_to_string("documents/_row.html", {"document": row_facts(document, request.user)},
                                   request=request)
            results.append({"name": upload.name, "ok": True, "status": 202, "document": progress_of(document),
                            "row_html": row})
        except UploadRejected as error:
            result = {"name": upload.name, "ok": False, "status": error.status_code, "detail": str(error)}
            if isinstance(error, DuplicateDocument):
                result["existing_id"] = error.existing.pk
            results.append(result)
    # A name the user has no collection of creates one: said first, so that a typo is seen at once.
    created_message = services.collection_created_message(collection) if collection and created else ""
    if wants_json:
        return _upload_answer(request, results, retry_after, collection=collection, created_message=created_message)
    if created_message:
        messages.info(request, created_message)
    for result in results:
        if result["ok"] and result["document"]["message_kind"] == "error":  # accepted but failed at once (empty)
            messages.error(request, f"{result['name']}: {result['document']['error']}")
        elif result["ok"]:
            messages.success(request, f"{result['name']}: queued for processing.")
        else:
            messages.error(request, f"{result['name']}: {result['detail']}")
    return redirect("documents:list")


def _upload_answer(
    request, results: list[dict], retry_after: int, *, collection: Collection | None, created_message: str
) -> HttpResponse:
    """202 when a file was accepted (each file's result says what became of it); otherwise the API's error.

    Every file refused: the status the API gives that refusal (413 too large, 409 already there with
    ``existing_id``), 429 when the upload limit refused one, else 400 for different reasons; ``detail``
    has every file's reason. ``collection`` names the collection uploaded to (``created`` when this upload
    made it; null when every file was over the limit), and ``message`` says so when it did ("" otherwise).
    """
    statuses = {result["status"] for result in results}
    if 202 in statuses:
        status = 202
    elif 429 in statuses:
        status = 429  # trying again later may get them all in
    else:
        status = statuses.pop() if len(statuses) == 1 else 400
    body: dict = {"results": results, "message": created_message, "collection": collection and
                  {"id": collection.pk, "name": collection.name, "created": bool(created_message)}}
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
@require_POST
def document_bulk(request):
    """Delete or re-ingest the checked documents: first a confirmation listing them, then the action.

    Both steps ask ``bulk_selection`` which documents the user manages (and, for re-ingest, where it can
    help); the others are listed with the reason and left alone.
    """
    back = _library_query(request.POST)  # the list as it was: the same filters, sort and page
    action = request.POST.get("action", "")
    ids = [i for i in map(parse_id, request.POST.getlist("ids")) if i is not None]
    if action not in BULK_ACTIONS:
        messages.error(request, "Choose Delete or Re-ingest for the checked documents.")
        return _back_to_library(back)
    if not ids:
        messages.error(request, "Check at least one document first.")
        return _back_to_library(back)
    if request.POST.get("confirmed") != "yes":
        selection = bulk_selection(user=request.user, ids=ids, action=action)
        return render(request, "documents/bulk_confirm.html", {"selection": selection, "back": back,
                                                                "back_params": _library_parameters(request.POST)})
    if action == "delete":
        selection = services.documents_bulk_delete(actor=request.user, ids=ids)
        done = "Deleted"
    else:
        selection = services.documents_bulk_reingest(actor=request.user, ids=ids)
        done = "Queued again"
    count = len(selection.documents)
    if count:
        messages.success(request, f"{done} {count} document{'s' if count != 1 else ''}.")
    for reason, documents in selection.refused.items():
        left = len(documents)
        messages.error(request, f"{left} document{'s were' if left != 1 else ' was'} left unchanged: {reason}")
    if not count and not selection.refused:
        messages.error(request, "None of the checked documents exists any more.")
    return _back_to_library(back)


@login_required
@require_GET
@reads_from_replica
def document_detail(request, pk: int):
    """A document and a page of its chunks; ``?chunk=`` opens the page of that chunk and highlights it."""
    document, can_manage = document_for_user(request.user, pk)
    page, highlighted = chunk_page(document, page=request.GET.get("page"), chunk=parse_id(request.GET.get("chunk", "")))
    similar = similar_documents(user=request.user, document=document, k=SIMILAR_ON_PAGE)
    interest_record(user=request.user, document_ids=[document.pk], kind=Interest.Kind.OPENED)
    return render(
        request, "documents/detail.html",
        {"document": document, "page": page, "chunks": page.object_list, "highlighted": highlighted,
         "can_manage": can_manage, "can_reingest": can_manage and reingest_offered(document), "similar": similar},
    )


@login_required
@require_GET
def document_download(request, pk: int):
    """The original file, for whoever may read the document (404 for anyone else), as an attachment.

    Files are never served from a media URL: this access check is the only way to them.
    """
    document, _ = document_for_user(request.user, pk)
    try:
        handle = document.file.open("rb")
    except (FileNotFoundError, ValueError):  # ValueError: no file was ever stored
        raise Http404("The original file of this document is no longer stored.") from None
    return FileResponse(
        handle, as_attachment=True, filename=document.original_filename or document.title,
        content_type=download_type(document),
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
    return _back_to_library(_library_query(request.GET))


@login_required
@require_POST
def document_reingest(request, pk: int):
    """Process a document again from scratch (its uploader or the collection's owner), where that can help."""
    document, can_manage = document_for_user(request.user, pk)
    if not can_manage:
        messages.error(request, managers_only("re-ingest"))
    elif not reingest_helps(document):
        messages.error(request, f"“{document.title}” was not queued again. {REINGEST_CANNOT_HELP}")
    else:
        services.document_reingest(document=document, actor=request.user)
        messages.success(request, f"“{document.title}” queued again.")
    if request.POST.get("next") == "detail":
        return redirect("documents:detail", pk=document.pk)
    return _back_to_library(_library_query(request.GET))


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
    if request.POST.get("next") == "detail":
        return redirect("documents:detail", pk=document.pk)
    return _back_to_library(_library_query(request.GET))


@login_required
@require_POST
def forget_history(request):
    """Forget what the caller opened and asked about: "recommended for you" starts again from popular and new."""
    interest_clear(user=request.user)
    messages.success(request, "Your reading history is cleared; recommendations start afresh.")
    return _back_to_library("")


@login_required
@require_GET
def chunk_similar(request, pk: int):
    """More like this passage: the nearest passages of other documents the caller may read (404 for another's)."""
    chunk = chunk_for_user(request.user, pk)
    passages = similar_passages(user=request.user, chunk=chunk, k=SIMILAR_PASSAGES_ON_PAGE)
    return render(request, "documents/chunk_similar.html",
                  {"chunk": chunk, "document": chunk.document, "passages": passages})
