"""The device authorization grant (RFC 8628) with offline access (SPEC P7).

DOT 3.4.1's device flow does not work with oauthlib 4.0.1; these views, with
``OfflineAccessValidator.validate_device_code``, supply what is missing, and make
the user-code approval page the consent screen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from urllib.parse import urlencode, urlsplit, urlunsplit

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import FormView
from oauth2_provider.compat import login_not_required
from oauth2_provider.models import (
    DeviceCodeResponse,
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
)
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.signals import app_authorized
from oauth2_provider.views import TokenView
from oauth2_provider.views.device import (
    DeviceAuthorizationView,
    DeviceGrantForm,
    DeviceGrantStatusView,
    DeviceUserCodeView,
)
from oauthlib.openid.connect.core.grant_types.base import GrantTypeBase as OpenIDGrantTypeBase

from . import (
    OFFLINE_ACCESS_SCOPE,
    authentication,
    client_metadata,
    dpop,
    hardening,
    metadata,
    policy,
    ratelimit,
    services,
    token_storage,
)
from .conf import settings
from .forms import DeviceDecisionForm
from .validators import DEVICE_CODE_GRANT, client_may_have_offline_access, client_signs_id_tokens


class OfflineAccessDeviceAuthorizationView(DeviceAuthorizationView):
    """DOT's device authorization endpoint, working with oauthlib 4.

    oauthlib 4 adds ``scope`` to the device authorization response, which DOT
    3.4.1 passes whole to its ``DeviceCodeResponse`` and fails with a TypeError.
    The response keeps only the fields RFC 8628 section 3.2 defines.
    """

    @method_decorator(transaction.atomic)
    def post(self, request, *args, **kwargs):
        """RFC 8628 3.1-3.2, with the device code stored as its keyed hash (issue 9).

        DOT saves the grant with the plaintext codes; the UPDATE right after, in
        the same transaction, replaces both before anything is committed.
        """
        response = self._post(request, *args, **kwargs)
        if response.status_code == 200:
            answer = json.loads(response.content)
            get_device_grant_model().objects.filter(device_code=answer["device_code"]).update(
                device_code=token_storage.stored_value(answer["device_code"]),
                # The code's canonical form: what the user types is normalised the same way.
                user_code=token_storage.stored_value(normalise_user_code(answer["user_code"])),
            )
        return response

    def _post(self, request, *args, **kwargs):
        client_id = request.POST.get("client_id")
        basic_client_id = hardening.basic_client_id(request)
        if not metadata.device_grant_enabled():
            # Without a verification URI DOT would answer 200 with "verification_uri": null,
            # a grant no user can complete; discovery does not list it either.
            response = hardening.oauth_error(
                "unsupported_grant_type", "The device authorization grant is not enabled on this server."
            )
        elif basic_client_id is not None:
            response = self._identify_basic_client(request, client_id, basic_client_id)
            if response is None:
                response = super().post(request, *args, **kwargs)
        elif not client_id:
            # oauthlib also reads the query string, DOT then only the body: a
            # client_id in the query alone passed oauthlib and raised in DOT (500).
            # RFC 8628 3.1 puts the parameters in the form-encoded body.
            response = hardening.oauth_error(
                "invalid_request",
                "Send client_id in the form-encoded request body, or authenticate with HTTP Basic.",
            )
        else:
            response = super().post(request, *args, **kwargs)
        # RFC 8628 3.2 / RFC 6749 5.1: the answer carries the device_code.
        return hardening.forbid_caching(response)

    def _identify_basic_client(self, request, client_id: str | None, basic_client_id: str):
        """RFC 8628 3.1 / RFC 6749 2.3.1: a client authenticating with HTTP Basic.

        oauthlib's device endpoint wants ``client_id`` in the body before it
        authenticates the client, and DOT's view reads it from there: the Basic
        credentials' client_id is put there (DOT's validator then checks the
        secret, as at the token endpoint). Returns the error response when the
        request cannot be served, else None.
        """
        if client_id and client_id != basic_client_id:
            # RFC 6749 2.3: one authentication method per request; a body naming
            # another client would make DOT fall back to that client.
            return _client_authentication_failed()
        if not get_application_model().objects.filter(client_id=basic_client_id).exists():
            # oauthlib would answer invalid_request (unknown client_id); a failed
            # authentication is invalid_client (RFC 6749 5.2), worded as for a wrong secret.
            return _client_authentication_failed()
        if not client_id:
            body = request.POST.copy()
            body["client_id"] = basic_client_id
            request.POST = body
        return None

    def create_device_authorization_response(self, request):
        headers, response, status = super().create_device_authorization_response(request)
        if status == 200 and isinstance(response, dict):
            known = {spec.name for spec in dataclasses.fields(DeviceCodeResponse)}
            response = {key: value for key, value in response.items() if key in known}
            response["user_code"] = grouped_user_code(response["user_code"])
            # A site's OAUTH_DEVICE_VERIFICATION_URI_COMPLETE (DOT's setting) wins.
            if not response.get("verification_uri_complete") and response.get("verification_uri"):
                response["verification_uri_complete"] = verification_uri_complete(
                    response["verification_uri"], response["user_code"]
                )
        return headers, response, status


#: Characters a person may type between the code's characters: whitespace and dashes
#: (hyphen-minus and the Unicode dashes a phone keyboard may substitute).
_USER_CODE_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d]+")
#: The alphabet of DOT's user code generator (RFC 4648 base32hex), with its other letters.
_CANONICAL_USER_CODE = re.compile(r"[0-9A-Z]+")
_USER_CODE_GROUP = 4


def normalise_user_code(typed: str) -> str:
    """The canonical form of a user code: what is hashed and stored, and what is compared.

    RFC 8628 6.1: the code is case-insensitive and the dashes added for
    readability are optional, so spaces and dashes are dropped and letters
    upper-cased (after NFKC, which makes full-width input from an East Asian
    keyboard plain ASCII). A custom ``OAUTH_DEVICE_USER_CODE_GENERATOR`` should
    therefore draw from a case-insensitive alphabet without dashes.
    """
    return _USER_CODE_SEPARATORS.sub("", unicodedata.normalize("NFKC", typed)).upper()


def grouped_user_code(code: str) -> str:
    """The user code as the device shows it: DOT's 8 characters as ``XXXX-XXXX`` (RFC 8628 3.2, 6.1).

    Only a code in the canonical alphabet whose length is a multiple of four is
    grouped; a custom generator's own formatting is left as it made it.
    """
    groupable = len(code) > _USER_CODE_GROUP and not len(code) % _USER_CODE_GROUP
    if not groupable or not _CANONICAL_USER_CODE.fullmatch(code):
        return code
    return "-".join(code[start : start + _USER_CODE_GROUP] for start in range(0, len(code), _USER_CODE_GROUP))


def shown_user_code(typed: str) -> str:
    """A code from a link (``verification_uri_complete``), shown as the device shows it.

    A code that normalises to the canonical alphabet is grouped (``frrte0tk`` is
    shown ``FRRT-E0TK``); anything else is shown exactly as it came (and escaped).
    """
    canonical = normalise_user_code(typed)
    if _CANONICAL_USER_CODE.fullmatch(canonical):
        return grouped_user_code(canonical)
    return typed


def _client_authentication_failed():
    return hardening.oauth_error(
        "invalid_client", "Client authentication failed.", status=401, challenge=hardening.BASIC_CHALLENGE
    )


def verification_uri_complete(verification_uri: str, user_code: str) -> str:
    """RFC 8628 3.2: the verification URI with the user code in its query (for QR codes).

    The configured URI's own query and fragment are kept as they are; a
    ``user_code`` already in it is replaced. The code entry page prefills its
    field from this parameter and waits for the user to confirm (RFC 8628 5.4).
    """
    parts = urlsplit(verification_uri)
    kept = [part for part in parts.query.split("&") if part and part.split("=", 1)[0] != "user_code"]
    query = "&".join([*kept, urlencode({"user_code": user_code})])
    return urlunsplit(parts._replace(query=query))


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
class OfflineAccessTokenView(TokenView):
    """DOT's token endpoint with device-code polls answered by the validator (RFC 8628 3.5).

    DOT answers device polls from the DeviceGrant's status itself (no
    ``slow_down``, no expiry check, a new token pair on every poll after approval,
    a 500 without ``device_code``). Here every poll goes through oauthlib's device
    grant and :meth:`OfflineAccessValidator.validate_device_code`. Unknown codes are
    answered before DOT's pre-token hook, which would raise on them.
    """

    @classmethod
    def get_server(cls):
        """DOT's oauthlib server, with the device grant's token response carrying an id_token."""
        server = super().get_server()
        if oauth2_settings.OIDC_ENABLED:
            grant_types = server.grant_types
            device_grant = grant_types.get(DEVICE_CODE_GRANT)
            if device_grant is not None and not isinstance(device_grant, OpenIDDeviceCodeGrant):
                grant_types[DEVICE_CODE_GRANT] = OpenIDDeviceCodeGrant(device_grant)
        return server

    def post(self, request, *args, **kwargs):
        """Check the request's DPoP proof (RFC 9449 4.3) first, then answer as DOT would.

        A bad proof is ``invalid_dpop_proof`` whatever the grant, before anything is
        looked up. A good one (or its absence) is handed to the validator beside the
        request (:data:`offline_access.dpop.META_KEY`), which binds and checks keys.
        """
        try:
            proof = dpop.check_request(request, require_nonce=settings.DPOP_NONCE_REQUIRED)
        except dpop.DPoPError as error:
            return dpop.token_error_response(error)
        request.META[dpop.META_KEY] = proof
        response = self._post(request, *args, **kwargs)
        if settings.DPOP_NONCE_REQUIRED:
            # RFC 9449 8.2: a fresh nonce with every answer, for the client's next proof.
            response["DPoP-Nonce"] = dpop.new_nonce()
        return response

    def _post(self, request, *args, **kwargs):
        if request.POST.get("grant_type") == DEVICE_CODE_GRANT:
            device_code = request.POST.get("device_code", "")
            if not device_code:
                return _token_error("invalid_request", "Missing device_code parameter.")
            stored = (
                get_device_grant_model()
                .objects.filter(device_code__in=token_storage.stored_candidates(device_code))
                .values_list("device_code", flat=True)
                .first()
            )
            if stored is None:
                return _token_error("invalid_grant", "Unknown device_code.")
            # The device code is stored as its keyed hash (issue 9): from here on
            # oauthlib, DOT's pre-token hook and validate_device_code see the stored
            # value this lookup found, which they look up by equality.
            body = request.POST.copy()
            body["device_code"] = stored
            request.POST = body
            response = self.authorization_flow_token_response(request)
            # RFC 6749 5.1 / 5.2, every poll answer, errors included: never cached.
            response["Cache-Control"] = "no-store"
            return response
        return self.authorization_flow_token_response(request)

    @method_decorator(sensitive_post_parameters("password", "client_secret"))
    def authorization_flow_token_response(self, request, *args, **kwargs):
        """DOT's token response, sending ``app_authorized`` with the token it issued.

        DOT finds that token again by the SHA-256 of the plaintext, which is not
        what is stored any more (issue 9). The validator hands over the row it
        saved instead (no query); a grace-period retry, which saves none, looks
        it up by its stored hash.
        """
        previous = token_storage.issued_access_token.set(None)
        try:
            _url, headers, body, status = self.create_token_response(request)
            issued = token_storage.issued_access_token.get()
        finally:
            token_storage.issued_access_token.reset(previous)
        if status == 200:
            access_token = json.loads(body).get("access_token")
            if access_token is not None:
                candidates = token_storage.checksum_candidates(access_token)
                if issued is None or issued.token_checksum not in candidates:
                    issued = get_access_token_model().objects.filter(token_checksum__in=candidates).first()
                # A racer's grace-period answer may carry an access token that a rotation
                # has deleted meanwhile (RFC 9700 4.14.2): the pair is still owed, but no
                # signal is sent for a token that no longer exists.
                if issued is not None:
                    app_authorized.send(sender=self, request=request, token=issued)
        response = HttpResponse(content=body, status=status)
        for key, value in headers.items():
            response[key] = value
        return response


class OpenIDDeviceCodeGrant(OpenIDGrantTypeBase):
    """oauthlib's device grant (RFC 8628 3.4-3.5), with an id_token when ``openid`` was granted.

    OpenID Connect defines no device flow, but relying parties (openid-client)
    expect an id_token for an ``openid`` scope whatever the grant, as the code
    flow gives. oauthlib's OpenID ``Server`` registers the plain OAuth 2 device
    grant, whose token response runs no token modifiers, so DOT's
    ``finalize_id_token`` is never reached. This wraps that grant the way
    oauthlib's OpenID refresh grant wraps its OAuth 2 one, and adds the id_token
    right after the access token is made, before ``save_token``, where the code
    flow adds it: DOT then signs it, stores its ``IDToken`` and links it to the
    access token. No nonce (the device sent none); ``at_hash`` as in the code flow.
    """

    def __init__(self, device_grant):
        self.proxy_target = device_grant

    def create_token_response(self, request, token_handler):
        return self.proxy_target.create_token_response(request, _AddingIdToken(token_handler, self))

    def add_id_token(self, token, token_handler, request, nonce=None):
        if not client_signs_id_tokens(request.client):
            # The app's validator already left openid out of such a client's scopes
            # (policy.scopes_for_client); this keeps a site's own validator from a 500.
            return token
        return super().add_id_token(token, token_handler, request, nonce=nonce)


class _AddingIdToken:
    """A token handler that hands each token it makes to the grant's ``add_id_token``."""

    def __init__(self, token_handler, grant: OpenIDDeviceCodeGrant):
        self._token_handler = token_handler
        self._grant = grant

    def create_token(self, request, *args, **kwargs):
        token = self._token_handler.create_token(request, *args, **kwargs)
        return self._grant.add_id_token(token, self._token_handler, request)

    def __getattr__(self, name):
        return getattr(self._token_handler, name)


def _token_error(error: str, description: str) -> JsonResponse:
    return JsonResponse(
        {"error": error, "error_description": description}, status=400, headers={"Cache-Control": "no-store"}
    )


def _code_entry_limit() -> ratelimit.AttemptLimit:
    return ratelimit.AttemptLimit(
        name="device-code",
        attempts=settings.DEVICE_CODE_ATTEMPTS,
        window=settings.DEVICE_CODE_ATTEMPT_WINDOW,
        cache_alias=settings.DEVICE_CODE_ATTEMPT_CACHE,
    )


def _code_entry_subjects(request) -> list[str]:
    """Who a code entry counts against: the account, and the client address (RFC 8628 5.1)."""
    subjects = [f"user:{request.user.pk}"]
    address = ratelimit.client_address(request, settings.DEVICE_CODE_CLIENT_ADDRESS)
    if address:
        subjects.append(f"address:{address}")
    return subjects


def find_by_user_code(typed: str, **filters):
    """The device grant whose user code was typed, found by its stored hash (issue 9).

    The code is compared in its canonical form (:func:`normalise_user_code`), the
    form it is stored in.
    """
    candidates = token_storage.stored_candidates(normalise_user_code(typed))
    return get_device_grant_model().objects.filter(user_code__in=candidates, **filters).first()


class UserCodeForm(DeviceGrantForm):
    """DOT's user-code form (RFC 8628 3.3), looking the code up by its stored hash."""

    def clean_user_code(self):
        typed = self.cleaned_data["user_code"]
        if not normalise_user_code(typed):
            # Only spaces and dashes: no lookup, the same answer as a wrong code.
            raise ValidationError(_("Incorrect user code"), code="incorrect_user_code")
        grant = find_by_user_code(typed)
        if grant is None:
            raise ValidationError(_("Incorrect user code"), code="incorrect_user_code")
        if grant.is_expired():
            raise ValidationError(_("Expired user code"), code="expired_user_code")
        if grant.status != grant.AUTHORIZATION_PENDING:
            raise ValidationError(_("User code has already been used"), code="user_code_already_used")
        self.cleaned_data["device_grant"] = grant
        return normalise_user_code(typed)


@method_decorator([never_cache, xframe_options_deny], name="dispatch")
class OfflineAccessDeviceUserCodeView(DeviceUserCodeView):
    """DOT's page where the user types the device's code, in the app's look.

    Two changes to DOT's behaviour, both RFC 8628 section 5:

    - Guessing is limited (5.1): failed entries count against the account and the
      client address; once either has used up ``DEVICE_CODE_ATTEMPTS`` within
      ``DEVICE_CODE_ATTEMPT_WINDOW``, every entry, right or wrong, gets a 429 page
      until the window has passed.
    - A code is claimed by the first account that types it while it is pending
      (one conditional UPDATE). DOT's page switched the grant to whoever typed the
      code last, so a victim typing an attacker's code at the moment the attacker
      clicked Allow handed the victim's account to the attacker's device.
    """

    template_name = "offline_access/device/user_code.html"
    rate_limited_template_name = "offline_access/device/rate_limited.html"
    form_class = UserCodeForm

    def get_initial(self):
        initial = super().get_initial()
        initial["user_code"] = shown_user_code(initial.get("user_code", ""))
        return initial

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        # RFC 8628 3.3.1: a code that came with the link (verification_uri_complete)
        # is shown for the user to compare with the device's, and only submitted
        # when the user confirms (RFC 8628 5.4). Nothing is looked up on GET, so
        # opening such a link is no attempt and no way around the limit (5.1).
        context["code_from_link"] = not context["form"].is_bound and bool(
            context["form"]["user_code"].value()
        )
        return context

    def get_success_url(self):
        # The code in its canonical form (a slug): the grant keeps only its hash (issue 9).
        return reverse(
            "oauth2_provider:device-confirm",
            kwargs={"client_id": self.device_grant.client_id, "user_code": self.typed_user_code},
        )

    def post(self, request, *args, **kwargs):
        retry_after = _code_entry_limit().retry_after(_code_entry_subjects(request))
        if retry_after is not None:
            response = TemplateResponse(
                request,
                self.rate_limited_template_name,
                {"retry_after": retry_after, "retry_minutes": math.ceil(retry_after / 60)},
                status=429,
            )
            response["Retry-After"] = str(retry_after)
            return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        grant = form.cleaned_data["device_grant"]
        if not services.claim_device_grant(grant, user=self.request.user):
            form.add_error(
                "user_code",
                forms.ValidationError(
                    _(
                        "This code is already being approved from another account, or it is no longer "
                        "valid. If you did not start this on a device in front of you, do not continue."
                    ),
                    code="user_code_taken",
                ),
            )
            return self.form_invalid(form)
        self.device_grant = grant
        self.typed_user_code = form.cleaned_data["user_code"]
        # DOT's form_valid would save the grant's user unconditionally; skip to FormView's redirect.
        return FormView.form_valid(self, form)

    def form_invalid(self, form):
        _code_entry_limit().record_failure(_code_entry_subjects(self.request))
        return super().form_invalid(form)


@method_decorator([never_cache, xframe_options_deny], name="dispatch")
class OfflineAccessDeviceStatusView(DeviceGrantStatusView):
    """DOT's device status page, in the app's look (and aware of redeemed codes)."""

    template_name = "offline_access/device/status.html"

    def get_object(self):
        grant = find_by_user_code(
            self.kwargs["user_code"], client_id=self.kwargs["client_id"], user=self.request.user
        )
        if grant is None:
            raise Http404
        return grant


@method_decorator([never_cache, xframe_options_deny], name="dispatch")
class OfflineAccessDeviceConfirmView(LoginRequiredMixin, FormView):
    """The device grant's approval page is the consent screen (SPEC P7).

    Same template, notice and Allow/Deny buttons as the authorization endpoint,
    plus RFC 8628 5.4's remote-phishing warning. The scopes come from the stored
    device grant, never from the POST. The decision is one conditional UPDATE
    bound to this user, the code and the pending state, with the consent recorded
    in its transaction (:func:`services.decide_device_grant`): when the code was
    taken over, expired or decided meanwhile, the user gets a page saying so and
    nothing changes.
    """

    form_class = DeviceDecisionForm

    def get_template_names(self) -> list[str]:
        return [settings.CONSENT_TEMPLATE]

    def get_device_grant(self):
        """The pending grant this user claimed on the code-entry page, or None."""
        model = get_device_grant_model()
        return find_by_user_code(
            self.kwargs["user_code"],
            client_id=self.kwargs["client_id"],
            status=model.AUTHORIZATION_PENDING,
            user=self.request.user,
        )

    def _approval(self, grant):
        application = get_object_or_404(get_application_model(), client_id=grant.client_id)
        scopes, offline_via = policy.device_approval_scopes(
            dict.fromkeys(grant.scope.split()),
            client_may_have_offline_access=client_may_have_offline_access(application, self.request),
        )
        return application, scopes, offline_via

    def not_pending(self, status: int):
        """The page for a code that is not (or no longer) waiting for this user's decision."""
        return TemplateResponse(self.request, "offline_access/device/not_pending.html", {}, status=status)

    def get(self, request, *args, **kwargs):
        grant = self.get_device_grant()
        if grant is None or grant.is_expired():
            return self.not_pending(404)
        application, scopes, _offline_via = self._approval(grant)
        descriptions = get_scopes_backend().get_all_scopes()
        return self.render_to_response(
            self.get_context_data(
                application=application,
                scopes=[(scope, descriptions.get(scope, scope)) for scope in scopes],
                offline_access=OFFLINE_ACCESS_SCOPE in scopes,
                # RFC 8628 5.4: the remote-phishing warning, on this page only.
                device_flow=True,
                # Loaded already by the offline-access check above: no query. No "Not you?"
                # here: the code stays claimed by the account that typed it.
                client_pages=client_metadata.client_pages(application),
            )
        )

    def form_valid(self, form):
        grant = self.get_device_grant()
        if grant is None or grant.is_expired():
            return self.not_pending(404)
        application, scopes, offline_via = self._approval(grant)
        # One conditional UPDATE binds the decision to this user, the code and the
        # pending state; the grant read above only chose the scopes to show.
        decided = services.decide_device_grant(
            grant,
            user=self.request.user,
            application=application,
            allow=form.cleaned_data["decision"] == "allow",
            scopes=scopes,
            record_consent=offline_via == policy.OfflineVia.SCREEN,
            # The device's ID tokens say when this session authenticated (OIDC Core 2).
            auth_time=authentication.claimed_auth_time(
                authentication.session_auth_time(self.request), self.request.user
            ),
        )
        if not decided:
            return self.not_pending(409)
        return redirect(
            "oauth2_provider:device-grant-status",
            client_id=grant.client_id,
            user_code=self.kwargs["user_code"],
        )

    def form_invalid(self, form):
        return HttpResponseBadRequest(gettext("Choose Allow or Deny."))
