"""The authorization endpoint with the offline-access consent screen, and discovery.

Both replace DOT's views under DOT's own URL names (``offline_access.urls``), so
discovery and every ``reverse("oauth2_provider:authorize")`` keep working.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe
from django.views.generic import FormView
from oauth2_provider.compat import login_not_required
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.models import (
    DeviceCodeResponse,
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
)
from oauth2_provider.oauth2_validators import is_valid_resource_uri
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import AuthorizationView, ConnectDiscoveryInfoView, TokenView
from oauth2_provider.views.device import DeviceAuthorizationView, DeviceGrantStatusView, DeviceUserCodeView
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error, InvalidRequestError
from oauthlib.openid.connect.core.exceptions import ConsentRequired

from . import OFFLINE_ACCESS_SCOPE, policy, services
from .conf import settings
from .forms import ConsentForm, sign_consent_request
from .models import Consent, ConsentEvent, OfflineTokenFamily
from .validators import DEVICE_CODE_GRANT, client_may_have_offline_access

#: The parts of a validated authorization request the consent form carries, signed.
_SIGNED_CREDENTIALS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "claims",
    "resource",
)


def has_nul_byte(request) -> bool:
    """True when a query or form parameter holds a NUL byte.

    No OAuth parameter may contain one (RFC 6749 appendix A), and PostgreSQL
    refuses to store or even compare text containing it, so DOT would answer
    such a request with a 500. It is refused up front instead.
    """
    params = [*request.GET.lists()]
    if request.method == "POST":
        params += request.POST.lists()
    return any("\x00" in name or any("\x00" in value for value in values) for name, values in params)


def refuse_nul_bytes(view):
    """Wrap a DOT endpoint so a NUL byte gets ``400 invalid_request`` instead of a 500."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if has_nul_byte(request):
            return JsonResponse(
                {"error": "invalid_request", "error_description": "Parameters must not contain NUL bytes."},
                status=400,
            )
        return view(request, *args, **kwargs)

    return wrapper


def _create_enabled() -> bool:
    return bool(oauth2_settings.OIDC_RP_INITIATED_REGISTRATION_ENABLED)


@method_decorator([never_cache, xframe_options_deny], name="dispatch")
class OfflineAccessAuthorizationView(AuthorizationView):
    """DOT's authorization endpoint with SPEC P2-P4 applied before any page is shown.

    GET decides, through :mod:`offline_access.policy`, which scopes survive, whether
    the consent screen is needed and how ``prompt`` is honoured. The screen's form
    carries the request signed; POST builds the grant only from that copy (SPEC P3).
    """

    form_class = ConsentForm

    def dispatch(self, request, *args, **kwargs):
        # Malformed requests are refused before anything else, login included: a
        # user should not sign in only to learn the client sent a broken request.
        if has_nul_byte(request):
            return self._invalid_request("Parameters must not contain NUL bytes.")
        try:
            self.prompt = policy.parse_prompt(request.GET.getlist("prompt"), create_enabled=_create_enabled())
        except policy.PromptError as exc:
            return self._invalid_request(str(exc))
        return super().dispatch(request, *args, **kwargs)

    def get_template_names(self) -> list[str]:
        return [settings.CONSENT_TEMPLATE]

    def get_form_kwargs(self):
        kwargs = super().get_form_kwargs()
        kwargs["user"] = self.request.user
        return kwargs

    def get_initial(self):
        return {}

    # GET ------------------------------------------------------------------------

    def get(self, request, *args, **kwargs):
        prompt = self.prompt
        if "create" in prompt:
            response = self.handle_prompt_create()
            if response is not None:
                return response
        if "login" in prompt:
            return self.handle_prompt_login()

        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            return self.error_response(error, application=None)
        # DOT's validator loaded the application onto oauthlib's request already.
        application = credentials["request"].client
        credentials = {key: credentials[key] for key in _SIGNED_CREDENTIALS if credentials.get(key)}
        resources = request.GET.getlist("resource")
        if resources:
            invalid = [uri for uri in resources if not is_valid_resource_uri(uri)]
            if invalid:
                return self.error_response(self._invalid_target(invalid[0], credentials), application)
            credentials["resource"] = resources

        scopes, offline_via = policy.authorization_scopes(
            dict.fromkeys(scopes),  # a repeated scope name is one scope
            response_type=credentials.get("response_type", ""),
            prompt=prompt,
            client_may_have_offline_access=client_may_have_offline_access(application, self.request),
            has_enduring_consent=OFFLINE_ACCESS_SCOPE in scopes and self._has_enduring_consent(application),
        )
        action = policy.authorization_action(
            prompt=prompt,
            already_approved="consent" not in prompt and self._already_approved(application, scopes),
        )
        if action == policy.Decision.APPROVE:
            return self._authorize(application, scopes, credentials, allow=True)
        if action == policy.Decision.CONSENT_REQUIRED:
            error = ConsentRequired(state=credentials.get("state"))
            return self.error_response(
                OAuthToolkitError(error=error, redirect_uri=credentials["redirect_uri"]), application
            )
        return self._render_consent_screen(application, scopes, offline_via, credentials)

    def _render_consent_screen(self, application, scopes, offline_via, credentials):
        descriptions = get_scopes_backend().get_all_scopes()
        signed = sign_consent_request(
            {
                "user": self.request.user.pk,
                "scopes": list(scopes),
                "offline_via": offline_via,
                "credentials": credentials,
            }
        )
        form = self.get_form_class()(initial={"request": signed}, user=self.request.user)
        context = self.get_context_data(
            form=form,
            application=application,
            scopes=[(scope, descriptions.get(scope, scope)) for scope in scopes],
            offline_access=OFFLINE_ACCESS_SCOPE in scopes,
        )
        return self.render_to_response(context)

    def _has_enduring_consent(self, application) -> bool:
        return (
            Consent.objects.active()
            .filter(user=self.request.user, application=application, kind=Consent.Kind.ENDURING)
            .exists()
        )

    def _already_approved(self, application, scopes) -> bool:
        """DOT's own reasons to skip the screen: skip_authorization, or approval_prompt=auto."""
        if application.skip_authorization:
            return True
        approval_prompt = self.request.GET.get("approval_prompt", oauth2_settings.REQUEST_APPROVAL_PROMPT)
        if approval_prompt != "auto":
            return False
        live_tokens = get_access_token_model().objects.filter(
            user=self.request.user, application=application, expires__gt=timezone.now()
        )
        return any(token.allow_scopes(scopes) for token in live_tokens)

    def handle_prompt_login(self):
        """Send the user to log in, dropping only ``login`` from ``prompt``.

        DOT drops the whole parameter, which would silently lose a ``consent``
        sent alongside ``login`` and with it the user's chance to grant offline access.
        """
        parsed = urlparse(self.request.get_full_path())
        query = [(key, value) for key, value in parse_qsl(parsed.query, keep_blank_values=True)]
        kept = []
        for key, value in query:
            if key == "prompt":
                value = " ".join(part for part in value.split() if part != "login")
                if not value:
                    continue
            kept.append((key, value))
        next_url = parsed._replace(query=urlencode(kept)).geturl()
        return redirect_to_login(next_url, resolve_url(self.get_login_url()), self.get_redirect_field_name())

    # POST -----------------------------------------------------------------------

    def form_valid(self, form):
        payload = form.cleaned_data["request"]
        credentials = payload["credentials"]
        application = get_application_model().objects.filter(client_id=credentials["client_id"]).first()
        if application is None:
            return self._invalid_request("The application no longer exists.")
        scopes = payload["scopes"]
        if form.allowed and payload["offline_via"] == policy.OfflineVia.SCREEN:
            # OIDC Core 11: consent is on record before any refresh token can exist.
            services.record_interactive_consent(
                user=self.request.user, application=application, scopes=scopes
            )
        return self._authorize(application, scopes, credentials, allow=form.allowed)

    def form_invalid(self, form):
        message = " ".join(str(error) for errors in form.errors.values() for error in errors)
        return self._invalid_request(message)

    # Shared ---------------------------------------------------------------------

    def _authorize(self, application, scopes, credentials, *, allow: bool):
        credentials = dict(credentials)
        if isinstance(credentials.get("claims"), dict):
            credentials["claims"] = json.dumps(credentials["claims"])
        try:
            uri, _headers, _body, _status = self.create_authorization_response(
                request=self.request, scopes=" ".join(scopes), credentials=credentials, allow=allow
            )
        except OAuthToolkitError as error:
            return self.error_response(error, application)
        return self.redirect(uri, application)

    def _invalid_request(self, description: str):
        error = InvalidRequestError(description=description)
        return self.render_to_response({"error": error}, status=400)

    @staticmethod
    def _invalid_target(uri, credentials):
        return OAuthToolkitError(
            error=CustomOAuth2Error(
                error="invalid_target",
                description="A resource must be an absolute URI with a scheme and host.",
                state=credentials.get("state"),
            ),
            redirect_uri=credentials["redirect_uri"],
        )


class OfflineAccessDiscoveryView(ConnectDiscoveryInfoView):
    """OpenID discovery listing the ``prompt`` values this server really honours (SPEC P8)."""

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        if isinstance(response, JsonResponse) and response.status_code == 200:
            data = json.loads(response.content)
            data["prompt_values_supported"] = sorted(
                policy.SUPPORTED_PROMPTS | (policy.OPTIONAL_PROMPTS if _create_enabled() else set())
            )
            # The endpoints a client needs besides DOT's list (RFC 8414, RFC 8628).
            for key, name in (
                ("revocation_endpoint", "revoke-token"),
                ("introspection_endpoint", "introspect"),
                ("device_authorization_endpoint", "device-authorization"),
            ):
                url = self._get_endpoint_url(request, name)  # DOT's helper: honours OIDC_ISS_ENDPOINT
                if url is not None:
                    data.setdefault(key, url)
            response.content = json.dumps(data)
        return response


# The user's connected-apps page -------------------------------------------------
#
# Issue 4, "Users": every client holding offline access to the signed-in user's
# account, and a way to take it back, for the whole application or for one
# device. The views only look up the user's own rows (anything else is a 404) and
# call services.py, the same functions the admin and the commands use (SPEC C5).

#: Stored with the revocation event (SPEC C4); the audit trail is not translated.
USER_REVOCATION_REASON = "Revoked by the user on the connected-apps page."


def _user_page(view):
    """Login required; never cached or framed, like the consent screen."""
    return never_cache(xframe_options_deny(login_required(view)))


@dataclass
class ConnectedApp:
    """One application on the connected-apps page.

    A client normally holds one active consent; when an administrator's enduring
    consent and the user's own are both active, the page shows the application
    once, and revoking it revokes both.
    """

    application: Any
    #: The consent whose id the revoke URL carries (the most recently given one).
    consent_id: int
    granted_at: datetime
    last_used: datetime | None
    scope_names: list[str] = field(default_factory=list)
    scopes: list[tuple[str, str]] = field(default_factory=list)
    devices: list[OfflineTokenFamily] = field(default_factory=list)


def _connected_apps(consents, devices) -> list[ConnectedApp]:
    """Group the user's active consents by application and attach the live devices."""
    descriptions = get_scopes_backend().get_all_scopes()
    apps: dict[int, ConnectedApp] = {}
    app_of_consent: dict[int, ConnectedApp] = {}
    for consent in consents:  # newest first within an application
        app = apps.get(consent.application_id)
        if app is None:
            app = apps[consent.application_id] = ConnectedApp(
                application=consent.application,
                consent_id=consent.pk,
                granted_at=consent.granted_at,
                last_used=consent.last_used,
            )
        elif consent.last_used and (app.last_used is None or consent.last_used > app.last_used):
            app.last_used = consent.last_used
        app.scope_names.extend(consent.scopes)
        app_of_consent[consent.pk] = app
    for app in apps.values():
        app.scopes = [(name, descriptions.get(name, name)) for name in dict.fromkeys(app.scope_names)]
    for family in devices:
        # Two statements: a consent may have ended in between; its devices then go unlisted.
        app = app_of_consent.get(family.consent_id)
        if app is not None:
            app.devices.append(family)
    return list(apps.values())


@_user_page
@require_safe
def connected_apps(request: HttpRequest) -> HttpResponse:
    """List the applications that may act for the user while they are away."""
    active = Consent.objects.active().filter(user=request.user)
    consents = (
        active.with_usage()
        .select_related("application")
        .order_by("application__name", "application_id", "-granted_at", "-pk")
    )
    devices = (
        OfflineTokenFamily.objects.live()
        .filter(user=request.user, consent__in=active.values("pk"))
        .with_activity()
        .order_by("created_at", "pk")
    )
    return render(
        request,
        "offline_access/connected_apps.html",
        {"connected_apps": _connected_apps(list(consents), devices)},
    )


def _back_to_list(request: HttpRequest, message: str, level: int = messages.SUCCESS) -> HttpResponse:
    messages.add_message(request, level, message)
    return redirect("oauth2_provider:connected-apps")


@_user_page
@require_http_methods(["GET", "HEAD", "POST"])
def revoke_connected_app(request: HttpRequest, consent_id: int) -> HttpResponse:
    """Confirm (GET), then revoke (POST) every active consent of one application.

    ``consent_id`` names the application through one of the user's consents; the
    revocation covers all of the user's active consents for that application and
    every token issued under them, so the application loses offline access at once.
    """
    consent = get_object_or_404(
        Consent.objects.filter(user=request.user).select_related("application"), pk=consent_id
    )
    application = consent.application
    consents = Consent.objects.active().filter(user=request.user, application=application)
    gone = _("%(name)s no longer has access to your account.") % {"name": application.name}
    if request.method == "POST":
        services.revoke_consents(
            consents, actor=request.user, reason=USER_REVOCATION_REASON, via=ConsentEvent.Via.USER
        )
        return _back_to_list(request, gone)
    if not consents.exists():
        return _back_to_list(request, gone, messages.INFO)
    device_count = OfflineTokenFamily.objects.live().filter(consent__in=consents.values("pk")).count()
    return render(
        request,
        "offline_access/connected_apps_confirm.html",
        {"application": application, "family": None, "device_count": device_count},
    )


@_user_page
@require_http_methods(["GET", "HEAD", "POST"])
def revoke_connected_device(request: HttpRequest, family_id: int) -> HttpResponse:
    """Confirm (GET), then revoke (POST) the tokens of one device; the consent stays."""
    families = OfflineTokenFamily.objects.filter(user=request.user)
    family = get_object_or_404(families.with_activity().select_related("application"), pk=family_id)
    application = family.application
    device = families.live().filter(pk=family.pk)
    gone = _("%(name)s no longer has access on that device.") % {"name": application.name}
    if request.method == "POST":
        services.revoke_token_families(
            families.filter(pk=family.pk),  # by key: revoking changes what live() selects
            actor=request.user,
            reason=USER_REVOCATION_REASON,
            via=ConsentEvent.Via.USER,
        )
        return _back_to_list(request, gone)
    if not device.exists():
        return _back_to_list(request, gone, messages.INFO)
    other_devices = (
        families.live()
        .filter(application=application, consent__in=Consent.objects.active().filter(user=request.user))
        .exclude(pk=family.pk)
        .count()
    )
    return render(
        request,
        "offline_access/connected_apps_confirm.html",
        {"application": application, "family": family, "other_device_count": other_devices},
    )


# Device authorization grant (RFC 8628, SPEC P7) ------------------------------------


class OfflineAccessDeviceAuthorizationView(DeviceAuthorizationView):
    """DOT's device authorization endpoint, working with oauthlib 4.

    oauthlib 4 adds ``scope`` to the device authorization response, which DOT
    3.4.1 passes whole to its ``DeviceCodeResponse`` and fails with a TypeError.
    The response keeps only the fields RFC 8628 section 3.2 defines.
    """

    def create_device_authorization_response(self, request):
        headers, response, status = super().create_device_authorization_response(request)
        if status == 200 and isinstance(response, dict):
            known = {spec.name for spec in dataclasses.fields(DeviceCodeResponse)}
            response = {key: value for key, value in response.items() if key in known}
        return headers, response, status


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

    def post(self, request, *args, **kwargs):
        if request.POST.get("grant_type") == DEVICE_CODE_GRANT:
            device_code = request.POST.get("device_code", "")
            if not device_code:
                return _token_error("invalid_request", "Missing device_code parameter.")
            if not get_device_grant_model().objects.filter(device_code=device_code).exists():
                return _token_error("invalid_grant", "Unknown device_code.")
        return self.authorization_flow_token_response(request)


def _token_error(error: str, description: str) -> JsonResponse:
    return JsonResponse(
        {"error": error, "error_description": description}, status=400, headers={"Cache-Control": "no-store"}
    )


@method_decorator([never_cache, xframe_options_deny], name="dispatch")
class OfflineAccessDeviceUserCodeView(DeviceUserCodeView):
    """DOT's page where the user types the device's code, in the app's look."""

    template_name = "offline_access/device/user_code.html"


@method_decorator([never_cache, xframe_options_deny], name="dispatch")
class OfflineAccessDeviceStatusView(DeviceGrantStatusView):
    """DOT's device status page, in the app's look (and aware of redeemed codes)."""

    template_name = "offline_access/device/status.html"


class DeviceDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("allow", _("Allow")), ("deny", _("Deny"))])


@method_decorator([never_cache, xframe_options_deny], name="dispatch")
class OfflineAccessDeviceConfirmView(LoginRequiredMixin, FormView):
    """The device grant's approval page is the consent screen (SPEC P7).

    Same template, notice and Allow/Deny buttons as the authorization endpoint;
    Allow records the consent before the device can get any token. The scopes
    come from the stored device grant, never from the POST.
    """

    form_class = DeviceDecisionForm

    def get_template_names(self) -> list[str]:
        return [settings.CONSENT_TEMPLATE]

    def get_device_grant(self):
        model = get_device_grant_model()
        return get_object_or_404(
            model,
            client_id=self.kwargs["client_id"],
            user_code=self.kwargs["user_code"],
            status=model.AUTHORIZATION_PENDING,
            user=self.request.user,
        )

    def _approval(self):
        grant = self.get_device_grant()
        application = get_object_or_404(get_application_model(), client_id=grant.client_id)
        scopes, offline_via = policy.device_approval_scopes(
            dict.fromkeys(grant.scope.split()),
            client_may_have_offline_access=client_may_have_offline_access(application, self.request),
        )
        return grant, application, scopes, offline_via

    def get(self, request, *args, **kwargs):
        grant, application, scopes, _offline_via = self._approval()
        if grant.is_expired():
            raise Http404("This code has expired.")
        descriptions = get_scopes_backend().get_all_scopes()
        return self.render_to_response(
            self.get_context_data(
                application=application,
                scopes=[(scope, descriptions.get(scope, scope)) for scope in scopes],
                offline_access=OFFLINE_ACCESS_SCOPE in scopes,
            )
        )

    def form_valid(self, form):
        grant, application, scopes, offline_via = self._approval()
        if grant.is_expired():
            raise Http404("This code has expired.")
        if form.cleaned_data["decision"] == "allow":
            if offline_via == policy.OfflineVia.SCREEN:
                services.record_interactive_consent(
                    user=self.request.user, application=application, scopes=scopes
                )
            grant.scope, grant.status = " ".join(scopes), grant.AUTHORIZED
        else:
            grant.status = grant.DENIED
        grant.save(update_fields=["scope", "status"])
        return redirect(
            "oauth2_provider:device-grant-status", client_id=grant.client_id, user_code=grant.user_code
        )

    def form_invalid(self, form):
        return HttpResponseBadRequest("Choose Allow or Deny.")
