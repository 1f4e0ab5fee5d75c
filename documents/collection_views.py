"""Collections pages: the caller's collections (owned / shared with them) and the invitations waiting for their
answer, creating one, and a page per collection where its owner invites and removes members and members see who
owns it."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core import http, ratelimit
from documents import sharing
from documents.selectors import collection_for_user


@login_required
@require_http_methods(["GET", "POST"])
def collection_list(request: HttpRequest) -> HttpResponse:
    """GET: the caller's collections. POST: create one (name, description) and open its page."""
    error, status = "", 200
    if request.method == "POST":
        try:
            collection = sharing.collection_create(
                owner=request.user, name=request.POST.get("name", ""), description=request.POST.get("description", "")
            )
        except sharing.SharingRefused as refused:
            error, status = str(refused), refused.status_code
        else:
            messages.success(request, f"Created the collection “{collection.name}”.")
            return redirect("collections:detail", pk=collection.pk)
    context = {
        "page": sharing.collections_page(user=request.user),
        "invitations": sharing.invitations_for_user(user=request.user),
        "error": error,
        "name": request.POST.get("name", ""),
        "description": request.POST.get("description", ""),
    }
    return render(request, "collections/list.html", context, status=status)


def _detail(request: HttpRequest, pk: int, *, error: str = "", identifier: str = "", status: int = 200) -> HttpResponse:
    collection, is_owner = collection_for_user(request.user, pk)
    context = {
        "collection": collection,
        "is_owner": is_owner,
        "members": sharing.members_of(collection),
        "invitations": sharing.invitations_of(collection) if is_owner else [],
        "error": error,
        "identifier": identifier,
    }
    return render(request, "collections/detail.html", context, status=status)


@login_required
@require_http_methods(["GET"])
def collection_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Who owns it and who can read it; its owner also gets the forms to change that. Others: 404."""
    return _detail(request, pk)


@login_required
@require_POST
def member_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Invite someone (by username or e-mail) to read the collection: they see it once they accept."""
    collection, is_owner = collection_for_user(request.user, pk)
    if not is_owner:
        return http.error_response(403, sharing.owners_only("add members"), json=False, request=request)
    identifier = request.POST.get("member", "")
    allowed, retry_after = ratelimit.hit("share", request.user)
    if not allowed:
        return ratelimit.refused(request, "share", retry_after)
    try:
        invitation = sharing.member_invite(collection=collection, identifier=identifier, actor=request.user)
    except sharing.SharingRefused as refused:
        return _detail(request, pk, error=str(refused), identifier=identifier, status=refused.status_code)
    messages.success(request, f"Invited {invitation.invitee.get_username()}: they see the collection once they accept.")
    return redirect("collections:detail", pk=collection.pk)


@login_required
@require_POST
def invitation_withdraw(request: HttpRequest, pk: int, invitation_id: int) -> HttpResponse:
    collection, is_owner = collection_for_user(request.user, pk)
    if not is_owner:
        return http.error_response(403, sharing.owners_only("withdraw invitations"), json=False, request=request)
    try:
        invitee = sharing.invitation_withdraw(collection=collection, invitation_id=invitation_id, actor=request.user)
    except sharing.SharingRefused as refused:
        return _detail(request, pk, error=str(refused), status=refused.status_code)
    messages.success(request, f"Withdrew the invitation of {invitee.get_username()} to “{collection.name}”.")
    return redirect("collections:detail", pk=collection.pk)


# An invitation is answered by its invitee only: the services look it up among theirs, so anyone else's id is a 404.


@login_required
@require_POST
def invitation_accept(request: HttpRequest, invitation_id: int) -> HttpResponse:
    try:
        collection = sharing.invitation_accept(invitation_id=invitation_id, user=request.user)
    except sharing.NoSuchInvitation as missing:
        raise Http404(str(missing)) from missing
    messages.success(request, f"You joined “{collection.name}”: its documents are now in your searches.")
    return redirect("collections:detail", pk=collection.pk)


@login_required
@require_POST
def invitation_decline(request: HttpRequest, invitation_id: int) -> HttpResponse:
    try:
        collection = sharing.invitation_decline(invitation_id=invitation_id, user=request.user)
    except sharing.NoSuchInvitation as missing:
        raise Http404(str(missing)) from missing
    messages.success(request, f"You declined the invitation to “{collection.name}”.")
    return redirect("collections:list")


@login_required
@require_POST
def member_remove(request: HttpRequest, pk: int, user_id: int) -> HttpResponse:
    collection, is_owner = collection_for_user(request.user, pk)
    leaving = user_id == request.user.pk and not is_owner  # a member may always leave a collection shared with them
    if not (is_owner or leaving):
        return http.error_response(403, sharing.owners_only("remove members"), json=False, request=request)
    try:
        member = sharing.member_remove(collection=collection, user_id=user_id, actor=request.user)
    except sharing.SharingRefused as refused:
        return _detail(request, pk, error=str(refused), status=refused.status_code)
    if leaving:
        messages.success(request, f"You left “{collection.name}”: its documents are no longer in your searches.")
        return redirect("collections:list")
    messages.success(request, f"{member.get_username()} can no longer read “{collection.name}”.")
    return redirect("collections:detail", pk=collection.pk)
