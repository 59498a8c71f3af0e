"""Endpoint hardening: what every OAuth endpoint the app serves under ``/o/`` gets around DOT.

:mod:`offline_access.urls` wraps each endpoint with :func:`harden`, which adds, as
the endpoint needs it:

- refusal of NUL bytes in parameters (RFC 6749 appendix A; PostgreSQL cannot
  store or compare such text, so DOT would answer with a 500);
- refusal of malformed HTTP Basic client credentials (RFC 6749 2.3.1, RFC 7617)
  with ``401 invalid_client`` before DOT decodes them (it 500s on some);
- refusal of secrets sent in the URL, where access logs keep them (RFC 6749
  2.3.1, RFC 6750 2.3, RFC 9700 section 4.3.2), and of bearer tokens sent
  anywhere but the Authorization header at the resource endpoints;
- secrets hidden from Django's error reports, whatever DOT's own decorators say;
- ``Cache-Control: no-store`` and ``Pragma: no-cache`` on every answer of an
  endpoint that hands out tokens, codes or token metadata (RFC 6749 5.1).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from functools import wraps
from typing import TypeVar
from urllib.parse import unquote_plus

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables

View = Callable[..., HttpResponse]

_NUL_BYTES = "Parameters must not contain NUL bytes."

_Response = TypeVar("_Response", bound=HttpResponse)


def has_nul_byte(request: HttpRequest) -> bool:
    """True when a query or form parameter holds a NUL byte.

    No OAuth parameter may contain one (RFC 6749 appendix A), and PostgreSQL
    refuses to store or even compare text containing it, so DOT would answer
    such a request with a 500. It is refused up front instead.
    """
    params = [*request.GET.lists()]
    if request.method == "POST":
        params += request.POST.lists()
    return any("\x00" in name or any("\x00" in value for value in values) for name, values in params)


def oauth_error(
    error: str, description: str, *, status: int = 400, challenge: str | None = None
) -> JsonResponse:
    """An RFC 6749 5.2 error body; ``challenge`` becomes the WWW-Authenticate header."""
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    if challenge:
        response["WWW-Authenticate"] = challenge
    return forbid_caching(response)


def forbid_caching(response: _Response) -> _Response:
    """RFC 6749 5.1: answers carrying tokens (or errors about them) are never cached.

    ``no-store`` replaces whatever the view set: it is the only directive that
    keeps a shared cache or the browser's disk from holding the answer.
    """
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def refuse_nul_bytes(view: View) -> View:
    """Wrap a DOT endpoint so a NUL byte gets ``400 invalid_request`` instead of a 500."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if has_nul_byte(request):
            return oauth_error("invalid_request", _NUL_BYTES)
        return view(request, *args, **kwargs)

    return wrapper


def malformed_basic_credentials(request: HttpRequest) -> str | None:
    """Why the request's HTTP Basic credentials cannot be a client's, or None.

    None also when the request carries no Basic credentials. RFC 7617 2 and
    RFC 6749 2.3.1: base64 (strict alphabet) of ``client_id ":" client_secret``,
    each part form-encoded UTF-8. DOT decodes leniently and raises on characters
    outside ASCII (a 500); a NUL byte in the decoded id reaches PostgreSQL (a 500).
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    credentials = credentials.strip()
    try:
        decoded = base64.b64decode(credentials.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error):
        return "The Basic credentials are not base64 of UTF-8 text."
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        return "The Basic credentials must be client_id:client_secret."
    if any("\x00" in part for part in (decoded, unquote_plus(client_id), unquote_plus(secret))):
        return "The Basic credentials must not contain NUL bytes."
    return None


def basic_client_id(request: HttpRequest) -> str | None:
    """The client_id of well-formed HTTP Basic client credentials (RFC 6749 2.3.1), or None.

    Only identifies the client; the secret is checked by DOT's validator.
    """
    if malformed_basic_credentials(request):
        return None
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    decoded = base64.b64decode(credentials.strip().encode("ascii"), validate=True).decode("utf-8")
    return unquote_plus(decoded.partition(":")[0])


def presented_client_credentials(request: HttpRequest) -> tuple[str, str] | None:
    """The ``(client_id, secret)`` a request authenticates with, or None (RFC 6749 2.3.1).

    Read as DOT reads them: HTTP Basic when the header's scheme is exactly ``Basic``,
    else ``client_id`` and ``client_secret`` from the parameters (the body's winning
    over the query string's, as in oauthlib). None when there are none, or when the
    request uses more than one method (RFC 6749 2.3: it MUST NOT), where DOT would
    fall back from failed Basic credentials to the body's. Call after
    :func:`refuse_malformed_basic_credentials`, which makes the Basic part well formed.
    """
    params = request.GET.dict()
    if request.method == "POST":
        params.update(request.POST.dict())
    scheme, _, encoded = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme != "Basic":
        if not params.get("client_id"):
            return None
        return params["client_id"], params.get("client_secret") or ""
    try:
        decoded = base64.b64decode(encoded).decode("utf-8")
    except (UnicodeError, binascii.Error):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if "client_secret" in params or params.get("client_id", client_id) != client_id:
        return None
    return client_id, secret


#: The challenge of a failed client authentication: the scheme clients authenticate with.
BASIC_CHALLENGE = 'Basic realm="oauth"'


def refuse_malformed_basic_credentials(view: View) -> View:
    """Client authentication's edges (RFC 6749 5.2): malformed Basic credentials, and the 401's challenge.

    Basic credentials no client could have sent get 401 invalid_client. A 401 that
    oauthlib answers with a ``Bearer`` challenge (its default, a resource server's
    scheme no client can answer at these endpoints) names ``Basic`` instead, unless
    the caller itself presented a bearer token (a resource server at introspection).
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        problem = malformed_basic_credentials(request)
        if problem:
            return oauth_error("invalid_client", problem, status=401, challenge=BASIC_CHALLENGE)
        response = view(request, *args, **kwargs)
        scheme = request.META.get("HTTP_AUTHORIZATION", "").strip().partition(" ")[0].lower()
        challenge = response.get("WWW-Authenticate", "") if response.status_code == 401 else ""
        if challenge.lower().startswith("bearer") and scheme != "bearer":
            response["WWW-Authenticate"] = BASIC_CHALLENGE
        return response

    return wrapper


def refuse_secrets_in_url(*fields: str) -> Callable[[View], View]:
    """400 invalid_request when one of ``fields`` is in the query string.

    RFC 6749 2.3.1: client credentials MUST NOT be included in the request URI;
    tokens and codes there end up in access logs and proxies just the same. DOT
    (through oauthlib) reads the query string of a token request as if it were
    the body.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            present = sorted(field for field in fields if field in request.GET)
            if present:
                return oauth_error(
                    "invalid_request",
                    f"Send {', '.join(present)} in the POST body, never in the URL.",
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def bearer_token_in_header_only(view: View) -> View:
    """Refuse an ``access_token`` parameter (URL or form body) at a protected resource.

    RFC 6750 2.3 and RFC 9700 4.3.2: a token in the URL lands in access logs,
    browser history and Referer headers; RFC 6750 2.2's form-body method is
    not needed by any client of this server, so the only accepted transport is
    the Authorization header (RFC 6750 2.1). Refused even when the header also
    carries a token: the client must learn to stop. The answer is RFC 6750
    3.1's ``400 invalid_request`` with a Bearer challenge.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        in_url = "access_token" in request.GET
        in_body = request.method == "POST" and "access_token" in request.POST
        if in_url or in_body:
            description = "Send the access token in the Authorization header, not in the URL or body."
            return oauth_error(
                "invalid_request",
                description,
                challenge=f'Bearer error="invalid_request", error_description="{description}"',
            )
        return view(request, *args, **kwargs)

    return wrapper


def no_store(view: View) -> View:
    """Every answer of ``view``, success or error, gets ``Cache-Control: no-store``."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        return forbid_caching(view(request, *args, **kwargs))

    return wrapper


def hide_from_error_reports(*fields: str) -> Callable[[View], View]:
    """Keep secrets out of Django's error reports (500 e-mails, DEBUG-off HTML reports).

    Two leaks are closed:

    - POST fields: Django keeps one list per request in
      ``request.sensitive_post_parameters``, and each ``sensitive_post_parameters``
      decorator replaces it. DOT's token view sets its own short list inside, which
      would replace one set outside. The list is set before the view runs and set
      again, merged with whatever the view set, after it returns or raises: the
      report, built afterwards, sees both.
    - Local variables of every frame inside the view (DOT and oauthlib hold the raw
      body, the headers and the tokens in them): ``sensitive_variables()`` stars all.

    - The Authorization header (HTTP Basic client credentials, a bearer token):
      Django 5.0+ hides every META key matching ``AUTH``, Django 4.2 does not, so
      when the view raises, the header is starred in ``request.META`` before the
      report is built.
    """

    def decorator(view: View) -> View:
        hidden_view = sensitive_variables()(view)

        @wraps(view)
        def wrapper(request, *args, **kwargs):
            request.sensitive_post_parameters = _merge_sensitive(request, fields)
            try:
                return hidden_view(request, *args, **kwargs)
            except BaseException:
                if "HTTP_AUTHORIZATION" in request.META:
                    request.META["HTTP_AUTHORIZATION"] = SafeExceptionReporterFilter.cleansed_substitute
                raise
            finally:
                request.sensitive_post_parameters = _merge_sensitive(request, fields)

        return wrapper

    return decorator


def _merge_sensitive(request: HttpRequest, fields: Iterable[str]) -> str | tuple[str, ...]:
    current = getattr(request, "sensitive_post_parameters", ())
    if current == "__ALL__":
        return current
    return tuple(dict.fromkeys([*current, *fields]))


def harden(
    view: View,
    *,
    hidden_fields: Iterable[str] = (),
    forbidden_in_url: Iterable[str] = (),
    refuse_nul: bool = True,
    client_authentication: bool = False,
    bearer_resource: bool = False,
    cache: bool = True,
) -> View:
    """Wrap one endpoint with the protections it needs (see the module docstring).

    ``hidden_fields`` are starred in error reports; ``forbidden_in_url`` are
    refused in the query string; ``client_authentication`` checks Basic
    credentials; ``bearer_resource`` takes access tokens from the Authorization
    header only; ``cache=False`` makes every answer ``no-store``.
    """
    if bearer_resource:
        view = bearer_token_in_header_only(view)
    if client_authentication:
        view = refuse_malformed_basic_credentials(view)
    if forbidden_in_url:
        view = refuse_secrets_in_url(*forbidden_in_url)(view)
    if refuse_nul:
        view = refuse_nul_bytes(view)
    if not cache:
        view = no_store(view)
    # Outermost, so that the report of a failure in any wrapper above is cleansed too.
    return hide_from_error_reports(*hidden_fields)(view)
