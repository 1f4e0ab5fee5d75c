"""Chat pages: conversations, and the answer streamed as server-sent events."""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterable, Mapping
from datetime import date

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from chat import citations, conversations, regenerating, services
from chat.models import Citation, Conversation, Message
from chat.templatetags.answers import render_markdown
from core import ratelimit
from core.http import parse_id, wants_json
from core.streaming import sse_response
from documents.models import Collection, Document
from documents.parsing import CONTENT_TYPES
from documents.search import Filters
from documents.selectors import collection_for_user

logger = logging.getLogger(__name__)

CONVERSATIONS_SHOWN = 50
# The "Only in" list: every ready document of the conversation's collection (of each readable collection,
# grouped, when it has none) up to this many in the page; the script shows FILTER_DOCUMENTS_CAP of them at a
# time, narrowed by what is typed, so that hundreds stay usable.
FILTER_DOCUMENTS_SHOWN = 1000
FILTER_DOCUMENTS_CAP = 50
UNEXPECTED_FAILURE = "Something went wrong while answering. Your question is saved; please try again."
# The "file type" filter: each kind the parser reads, and the content types a document of that kind
# records (its upload's declared type, or the one its name implies), from the parser's own table.
FILE_TYPE_LABELS = {"pdf": "PDF", "docx": "Word", "html": "HTML", "markdown": "Markdown", "text": "Text"}
FILE_TYPES = {kind: tuple(t for t, k in CONTENT_TYPES.items() if k == kind) for kind in FILE_TYPE_LABELS}
TAG_MAX_LENGTH = 100


@login_required
@require_GET
def chat_index(request):
    """The chat page without a conversation open: the latest one, or how to start one."""
    latest = Conversation.objects.filter(owner=request.user).only("pk").first()
    if latest is not None and "new" not in request.GET and "q" not in request.GET:
        return redirect("chat:detail", pk=latest.pk)
    return render(request, "chat/chat.html", _context(request, None))


@login_required
@require_POST
def chat_new(request):
    """Start a conversation, optionally limited to one collection the user may read."""
    reference = request.POST.get("collection") or ""
    collection = None
    if reference:
        if (collection_id := parse_id(reference)) is None:
            return HttpResponseBadRequest("Unknown collection.")
        collection, _ = collection_for_user(request.user, collection_id)
    # Clicking "New conversation" twice should not leave a trail of empty ones: reuse an unused one.
    conversation = Conversation.objects.filter(
        owner=request.user, collection=collection, title="", messages__isnull=True
    ).first() or Conversation.objects.create(owner=request.user, collection=collection)
    return redirect("chat:detail", pk=conversation.pk)


@login_required
@require_GET
def chat_detail(request, pk: int):
    conversation = conversations.conversation_for_user(request.user, pk)
    return render(request, "chat/chat.html", _context(request, conversation))


# Managing conversations (chat.conversations): rename, export, delete. Each takes the conversation
# through conversation_for_user first: another user's id is not found.

@login_required
@require_POST
def chat_rename(request, pk: int):
    """Rename from the page's inline form (JSON for its script) or from the list's menu (a redirect)."""
    conversation = conversations.conversation_for_user(request.user, pk)
    try:
        conversations.conversation_rename(conversation=conversation, title=request.POST.get("title") or "")
    except conversations.ConversationError as error:
        if wants_json(request):
            return JsonResponse({"detail": str(error)}, status=400)
        flash.error(request, f"Not renamed: {error}")
    else:
        if wants_json(request):
            return JsonResponse({"title": conversation.title})
        flash.success(request, "Conversation renamed.")
    return _back(request, conversation)


@login_required
@require_GET
def chat_export(request, pk: int):
    """The conversation as a Markdown file to download."""
    conversation = conversations.conversation_for_user(request.user, pk)
    response = HttpResponse(conversations.conversation_markdown(conversation),
                            content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{conversations.export_filename(conversation)}"'
    return response


@login_required
@require_POST
def chat_delete(request, pk: int):
    conversation = conversations.conversation_for_user(request.user, pk)
    conversation.delete()
    flash.success(request, "Conversation deleted.")
    return redirect("chat:index")


@login_required
@require_POST
def chat_delete_many(request):
    """Delete the ticked conversations of the list; ids that are not the user's are ignored."""
    ids = [i for i in map(parse_id, request.POST.getlist("conversation")) if i is not None]
    if not ids:
        flash.error(request, "Tick the conversations to delete first.")
    else:
        deleted = conversations.conversations_delete(user=request.user, ids=ids)
        flash.success(request, f"{deleted} conversation{'' if deleted == 1 else 's'} deleted.")
    return redirect("chat:index")


def _back(request, conversation: Conversation):
    """Back where the form was (the list may be showing another conversation), else the conversation."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect("chat:detail", pk=conversation.pk)


def _context(request, conversation: Conversation | None) -> dict:
    """What the page renders, in a fixed number of queries however long the conversation."""
    documents = Document.objects.visible_to(request.user).filter(status=Document.Status.READY)
    if conversation is not None and conversation.collection_id:
        documents = documents.filter(collection_id=conversation.collection_id)
    messages_list: Iterable[Message] = []
    query = conversations.clean_query(request.GET.get("q") or "")
    if conversation is not None:
        messages_list = conversation.messages.prefetch_related(
            Prefetch("citation_set", queryset=Citation.objects.order_by("index"))
        )
    return {
        "conversation": conversation,
        "conversations": conversations.conversations_listed(user=request.user, query=query, limit=CONVERSATIONS_SHOWN),
        "query": query,
        "title_max_length": conversations.TITLE_MAX_LENGTH,
        "collections": Collection.objects.visible_to(request.user)
        .select_related("owner").only("pk", "name", "owner__username").order_by("name"),
        # For the "only this document" filter, and to tell a new user to upload something first.
        "documents": list(
            documents.select_related("collection__owner")
            .only("pk", "title", "collection__name", "collection__owner__username")
            .order_by("collection__name", "collection_id", "title")[:FILTER_DOCUMENTS_SHOWN]
        ),
        "filter_documents_cap": FILTER_DOCUMENTS_CAP,
        "messages_list": messages_list,
        "file_types": FILE_TYPE_LABELS.items(),
        "tag_max_length": TAG_MAX_LENGTH,
    }


def _filters(data, conversation: Conversation) -> Filters | None:
    """Per-question filters from the form; ``None`` lets the service use the conversation's collection."""
    document = (data.get("document") or "").strip()
    after = (data.get("after") or "").strip()
    before = (data.get("before") or "").strip()
    file_type = (data.get("file_type") or "").strip()
    tag = (data.get("tag") or "").strip()
    if not (document or after or before or file_type or tag):
        return None
    document_id = parse_id(document)
    if document and document_id is None:
        raise ValueError("Unknown document.")
    created_after, created_before = _date(after), _date(before)
    if created_after and created_before and created_before <= created_after:
        raise ValueError("“Added before” must be a later date than “added after”.")
    if file_type and file_type not in FILE_TYPES:
        raise ValueError(f"Unknown file type: choose one of {', '.join(FILE_TYPE_LABELS.values())}.")
    if len(tag) > TAG_MAX_LENGTH:
        raise ValueError(f"A tag is at most {TAG_MAX_LENGTH} characters.")
    if any(ord(c) < 32 or ord(c) == 127 for c in tag):  # no tag holds them (and jsonb cannot hold NUL)
        raise ValueError("A tag cannot contain control characters.")
    # Access control stays in retrieval's SQL: a document id the user may not read finds nothing, and
    # the file type, tag and dates only narrow the collections the user may read.
    return Filters(
        collections=(conversation.collection_id,) if conversation.collection_id else (),
        documents=(document_id,) if document_id is not None else (),
        content_types=FILE_TYPES.get(file_type, ()),
        # Tags as documents keep them: a list under "tags" in their metadata, which chunks copy.
        metadata={"tags": [tag]} if tag else {},
        created_after=created_after,
        created_before=created_before,
    )


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise ValueError("The date must look like 2024-01-31.") from None


def _sse(event: Mapping[str, object]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _events(answer: Generator[services.AskEvent, None, None],
            conversation: Conversation) -> Generator[str, None, None]:
    """The service's events as server-sent events; the last one (done) carries the rendered answer."""
    try:
        for event in answer:
            if event["type"] == "done":
                urls = {c["index"]: c["url"] for c in event["citations"] if c["chunk_id"]}
                event["html"] = render_markdown(event["content"], urls)
                event["title"] = conversation.title
            yield _sse(event)
    except Exception:
        # The response has started (status 200): the failure can only be told as an event.
        logger.exception("answering in conversation %s failed", conversation.pk)
        yield _sse({"type": "error", "error": UNEXPECTED_FAILURE})
    finally:
        answer.close()


def chat_ask(request, pk: int):
    """POST a question; the answer streams back as server-sent events, then is saved.

    Under ASGI the events are served as an async iterator (core.streaming), so an open stream holds
    no server thread while the model thinks. The view itself is sync, like the middleware around
    it: an async view costs switches between the event loop and the request's thread (to enter the
    view, to read the session, to load the conversation), each a context switch before the first token.
    """
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not request.user.is_authenticated:
        return HttpResponse("Your session has ended: sign in again.", status=401, content_type="text/plain")
    conversation = get_object_or_404(
        Conversation.objects.filter(owner=request.user).select_related("owner"), pk=pk
    )
    regenerate = regenerating.last_question(conversation) if request.POST.get("regenerate") else None
    if request.POST.get("regenerate") and regenerate is None:
        return HttpResponseBadRequest("There is no question to ask again.", content_type="text/plain")
    question = services.clean_question(regenerate.content if regenerate else request.POST.get("question") or "")
    if not question:
        return HttpResponseBadRequest("Type a question first.", content_type="text/plain")
    if too_long := services.question_too_long(question):
        return HttpResponseBadRequest(too_long, content_type="text/plain")
    try:
        filters = _filters(request.POST, conversation)
    except ValueError as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain")
    allowed, retry_after = ratelimit.hit("chat", request.user)
    if not allowed:  # plain text: the page's script shows it in the answer's bubble
        return ratelimit.refused(request, "chat", retry_after, response=HttpResponse(
            ratelimit.message("chat", retry_after), content_type="text/plain"))
    events = _events(services.ask(conversation=conversation, question=question, filters=filters, again=regenerate),
                     conversation)
    return sse_response(request, events)



@login_required
@require_GET
def chat_passage(request, chunk_id: int):
    """A cited passage with its neighbours: the chat's side panel (a fragment, when the page's script asks)
    or a page of its own (a new tab on phones, or without the script). 404 for a chunk the user may not read.
    """
    passage = citations.passage_for_user(request.user, chunk_id)
    fragment = request.headers.get("X-Requested-With") == "fetch"
    response = render(request, "chat/_passage.html" if fragment else "chat/passage.html", {"passage": passage})
    response["Vary"] = "X-Requested-With"
    return response
