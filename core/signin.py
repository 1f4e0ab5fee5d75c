"""Sign-in throttling for /accounts/login/ and /admin/login/ (both views wrapped in ragsite/urls.py).

Failed attempts are counted per account (the username tried) and per client address
(``RATE_LIMIT_LOGIN_ACCOUNT``, ``RATE_LIMIT_LOGIN_IP``). Beyond either limit every attempt, even
with the right password, answers 429 with when to retry, until the window ends; the first refusal
of a window is written to the audit trail. A successful sign-in does not count.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from audit.models import AuditEvent
from audit.services import record
from core import ratelimit

SIGNED_IN = (301, 302, 303)  # LoginView redirects only when the credentials were right


View = Callable[..., HttpResponseBase]


def throttled(view: View) -> View:
    """Wrap a login view: count each POST before the password is checked, take it back when it signs in."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        account, address = account_key(request), address_key(request)
        # Counted first (atomically), so that parallel attempts cannot all pass a check made before counting.
        counted = [("login_account", account)] if account else []
        counted.append(("login_ip", address))
        for action, key in counted:
            usage = ratelimit.count(action, key)
            if not usage.allowed:
                return refused(request, action=action, usage=usage)
        response = view(request, *args, **kwargs)
        if response.status_code in SIGNED_IN:
            for action, key in counted:
                ratelimit.uncount(action, key)
        return response

    return wrapper


def account_key(request: HttpRequest) -> str:
    """The account tried; case and spaces folded, so that "Alice " and "alice" share one budget."""
    return request.POST.get("username", "").strip().casefold()[:150]


def address_key(request: HttpRequest) -> str:
    """The client's address; an IPv6 client is counted by its /64, which one machine usually owns whole."""
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def refused(request: HttpRequest, *, action: str, usage: ratelimit.Usage) -> HttpResponse:
    if usage.used == usage.limit + 1:  # the first refusal of this window: one audit event, not one per attempt
        record(action=AuditEvent.Action.SIGN_IN_THROTTLED, object_type="auth.user",
               object_repr=account_key(request), limit=action, retry_after=usage.retry_after)
    return ratelimit.refused(request, action, usage.retry_after)
