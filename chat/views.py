"""Chat pages: conversations, and the answer streamed as server-sent events."""

import json

from asgiref.sync import sync_to_async
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import HttpResponseBadRequest, HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from chat import services
from chat.models import Citation, Conversation
from chat.templatetags.answers import render_markdown
from documents.models import Collection


@login_required
@require_GET
def chat_index(request):
    """The chat page without a conversation open: pick one, or start one."""
    latest = Conversation.objects.filter(owner=request.user).first()
    if latest is not None and "new" not in request.GET:
        return redirect("chat:detail", pk=latest.pk)
    return render(request, "chat/chat.html", _context(request, None))


def _context(request, conversation):
    return {
        "conversation": conversation,
        "conversations": Conversation.objects.filter(owner=request.user)[:50],
        "collections": Collection.objects.visible_to(request.user),
        "messages_list": (
            conversation.messages.prefetch_related(
                Prefetch("citation_set", queryset=Citation.objects.order_by("index"))
            ) if conversation else []
        ),
    }


@login_required
@require_POST
def chat_new(request):
    collection_id = request.POST.get("collection") or None
    collection = None
    if collection_id:
        collection = get_object_or_404(Collection.objects.visible_to(request.user), pk=collection_id)
    conversation = Conversation.objects.create(owner=request.user, collection=collection)
    return redirect("chat:detail", pk=conversation.pk)


@login_required
@require_GET
def chat_detail(request, pk: int):
    conversation = get_object_or_404(Conversation.objects.filter(owner=request.user), pk=pk)
    return render(request, "chat/chat.html", _context(request, conversation))


@login_required
@require_POST
def chat_delete(request, pk: int):
    conversation = get_object_or_404(Conversation.objects.filter(owner=request.user), pk=pk)
    conversation.delete()
    flash.success(request, "Conversation deleted.")
    return redirect("chat:index")


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def chat_ask(request, pk: int):
    """POST a question; the answer streams back as server-sent events, then is saved.

    Async so that an open stream does not hold a server thread: each step of the (sync)
    answer generator runs in a worker thread.
    """
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponseBadRequest("Sign in first.", status=401)
    conversation = await sync_to_async(get_object_or_404)(
        Conversation.objects.filter(owner=user).select_related("owner"), pk=pk
    )
    question = (request.POST.get("question") or "").strip()
    if not question:
        return HttpResponseBadRequest("Ask a question.")
    generator = services.ask(conversation=conversation, question=question)
    step = sync_to_async(next, thread_sensitive=False)

    async def events():
        done = object()
        while (event := await step(generator, done)) is not done:
            if event["type"] == "done":
                urls = {c["index"]: c["url"] for c in event["citations"]}
                event["html"] = render_markdown(event["content"], urls)
            yield _sse(event)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
