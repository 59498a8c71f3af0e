"""The authorization endpoint with the offline-access consent screen, and discovery.

Both replace DOT's views under DOT's own URL names (``offline_access.urls``), so
discovery and every ``reverse("oauth2_provider:authorize")`` keep working. The
device grant's views are in :mod:`offline_access.device`, the user's page in
:mod:`offline_access.connected_apps`, introspection in :mod:`offline_access.introspection`.
"""

from __future__ import annotations

import json
from functools import wraps
from urllib.parse import parse_qsl, urlencode, urlparse, urlsplit, urlunsplit

from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import Http404, JsonResponse
from django.shortcuts import resolve_url
from django.utils import timezone, translation
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from oauth2_provider.compat import login_not_required
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
)
from oauth2_provider.oauth2_validators import is_valid_resource_uri
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import (
    AuthorizationView,
    ConnectDiscoveryInfoView,
    OAuthServerMetadataView,
)
from oauthlib.common import add_params_to_uri
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error, InvalidRequestError, InvalidScopeError
from oauthlib.openid.connect.core.exceptions import (
    ConsentRequired,
    LoginRequired,
    RequestNotSupported,
    RequestURINotSupported,
)

from . import (
    OFFLINE_ACCESS_SCOPE,
    authentication,
    client_metadata,
    dpop,
    languages,
    metadata,
    policy,
    services,
    switch_account,
)
from .conf import settings
from .forms import ConsentForm, new_form_identity, sign_consent_request
from .hardening import has_nul_byte
from .models import Consent
from .validators import client_may_have_offline_access, pkce_method_error, scopes_for_client

#: The error classes of :class:`offline_access.policy.RequestObjectError` codes.
_REQUEST_OBJECT_ERRORS = {
    "request_not_supported": RequestNotSupported,
    "request_uri_not_supported": RequestURINotSupported,
    "invalid_request": InvalidRequestError,
}

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


def _create_enabled() -> bool:
    return bool(oauth2_settings.OIDC_RP_INITIATED_REGISTRATION_ENABLED)


def with_issuer(uri: str, issuer: str) -> str:
    """``uri`` with RFC 9207's ``iss`` beside the authorization response's parameters.

    In the fragment when the response is there (implicit and hybrid responses), else in
    the query. An ``iss`` already present (DOT adds one when
    ``COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS`` is on, a registered redirect URI may
    carry one) is replaced: RFC 9207 2 allows one issuer only. The other parameters
    are left byte for byte as they were.
    """
    parts = urlsplit(uri)
    in_fragment = bool(parts.fragment)
    query = _without_parameter(parts.query, "iss")
    fragment = _without_parameter(parts.fragment, "iss")
    issuer_pair = urlencode({"iss": issuer})
    if in_fragment:
        fragment = f"{fragment}&{issuer_pair}" if fragment else issuer_pair
    else:
        query = f"{query}&{issuer_pair}" if query else issuer_pair
    return urlunsplit(parts._replace(query=query, fragment=fragment))


def _without_parameter(component: str, name: str) -> str:
    if not component:
        return component
    kept = [pair for pair in component.split("&") if pair.partition("=")[0] != name]
    return "&".join(kept)


def live_token_covers(user, application, scopes) -> bool:
    """Whether ``user`` holds a live access token for ``application`` whose scope covers ``scopes``.

    DOT's ``approval_prompt=auto`` check (``AccessToken.allow_scopes`` on every live
    token) without loading the tokens: only their distinct scope strings, which a
    user's tokens for one client share (one row per combination of scopes, however
    many tokens), checked with ``allow_scopes``' own rule, in Python, the same on
    every database.
    """
    wanted = set(scopes)
    granted = (
        get_access_token_model()
        .objects.filter(user=user, application=application, expires__gt=timezone.now())
        .values_list("scope", flat=True)
        .distinct()
    )
    return any(wanted.issubset(scope.split()) for scope in granted)


def in_requested_language(view):
    """Show the pages of the authorization flow in the language ``ui_locales`` asks for.

    OIDC Core 3.1.2.1: the first language of ``ui_locales`` that the site supports
    (:func:`offline_access.languages.requested`) wins over the one LocaleMiddleware
    took from the browser. The consent form posts back to the same URL, and the
    login redirect keeps the whole request as ``next``, so the parameter is there
    for the answer to the form and after signing in too. Pages are rendered inside
    the override: a TemplateResponse would otherwise render after it ended.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        language = languages.requested(request.GET.getlist("ui_locales"))
        if language is None:
            return view(request, *args, **kwargs)
        request.LANGUAGE_CODE = language  # as LocaleMiddleware sets it, for templates that read it
        with translation.override(language):
            response = view(request, *args, **kwargs)
            if callable(getattr(response, "render", None)) and not response.is_rendered:
                response.render()
        response.headers["Content-Language"] = language  # LocaleMiddleware keeps one already set
        return response

    return wrapper


# login_not_required: DOT marks its view's dispatch so, and overriding dispatch would drop
# the marker; under Django's LoginRequiredMiddleware this view must still answer anonymous
# prompt=none / prompt=login and refuse untrusted redirects itself (handle_no_permission).
@method_decorator(
    [login_not_required, never_cache, xframe_options_deny, in_requested_language], name="dispatch"
)
class OfflineAccessAuthorizationView(AuthorizationView):
    """DOT's authorization endpoint with SPEC P2-P4 applied before any page is shown.

    GET decides, through :mod:`offline_access.policy`, which scopes survive, whether
    the consent screen is needed and how ``prompt`` is honoured. The screen's form
    carries the request signed; POST builds the grant only from that copy (SPEC P3).

    Every answer to the client (code, error) is a redirect carrying ``iss`` (RFC 9207),
    with errors in the same place as a success would be; only a request whose
    redirect cannot be trusted gets the error page (RFC 6749 4.1.2.1). Both are
    settled in :meth:`error_response` and :meth:`redirect`.
    """

    form_class = ConsentForm
    #: The response type of the request being answered, once known (chooses query or fragment).
    response_type: str | None = None

    def dispatch(self, request, *args, **kwargs):
        # Malformed requests are refused before anything else, login included: a
        # user should not sign in only to learn the client sent a broken request.
        if has_nul_byte(request):
            return self._invalid_request(_("Parameters must not contain NUL bytes."))
        try:
            self.prompt = policy.parse_prompt(request.GET.getlist("prompt"), create_enabled=_create_enabled())
        except policy.PromptError as exc:
            self.prompt = frozenset()
            return self.error_at_client(InvalidRequestError, str(exc))
        try:
            policy.check_request_object(request.GET.getlist("request"), request.GET.getlist("request_uri"))
        except policy.RequestObjectError as exc:
            # The object may hold the parameters whose absence DOT would complain
            # about (OIDC Core 6.1): this error is the one the client needs.
            return self.error_at_client(_REQUEST_OBJECT_ERRORS[exc.error], str(exc), before_other_errors=True)
        mode_error = policy.response_mode_error(
            request.GET.get("response_type"), request.GET.getlist("response_mode")
        )
        if mode_error is not None:
            return self.error_at_client(InvalidRequestError, mode_error)
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

        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            return self.error_response(error, application=None)
        # DOT's validator loaded the application onto oauthlib's request already.
        application = credentials["request"].client
        self.response_type = credentials.get("response_type")
        response = self._require_authentication(prompt, credentials, application)
        if response is not None:
            return response
        pkce_error = pkce_method_error(
            credentials.get("code_challenge"), credentials.get("code_challenge_method")
        )
        if pkce_error is not None:
            # Before any page: the user should not approve a request that cannot get a code.
            pkce_error.state = credentials.get("state")
            return self.error_response(
                OAuthToolkitError(error=pkce_error, redirect_uri=credentials["redirect_uri"]), application
            )
        credentials = {key: credentials[key] for key in _SIGNED_CREDENTIALS if credentials.get(key)}
        resources = request.GET.getlist("resource")
        if resources:
            invalid = [uri for uri in resources if not is_valid_resource_uri(uri)]
            if invalid:
                return self.error_response(self._invalid_target(invalid[0], credentials), application)
            credentials["resource"] = resources
        dpop_jkt = request.GET.getlist("dpop_jkt")
        if dpop_jkt:
            # RFC 9449 10: the code will be exchanged only with a proof of this key.
            if len(dpop_jkt) > 1 or not dpop.is_thumbprint(dpop_jkt[0]):
                refusal = InvalidRequestError(
                    description="dpop_jkt must be one base64url SHA-256 JWK thumbprint (RFC 7638).",
                    state=credentials.get("state"),
                )
                return self.error_response(
                    OAuthToolkitError(error=refusal, redirect_uri=credentials["redirect_uri"]), application
                )
            # Signed with the rest of the request into the consent form (SPEC P3).
            credentials["dpop_jkt"] = dpop_jkt[0]

        scopes, offline_via = policy.authorization_scopes(
            dict.fromkeys(scopes),  # a repeated scope name is one scope
            response_type=credentials.get("response_type", ""),
            prompt=prompt,
            client_may_have_offline_access=client_may_have_offline_access(application, self.request),
            has_enduring_consent=OFFLINE_ACCESS_SCOPE in scopes and self._has_enduring_consent(application),
        )
        if not scopes:
            # Only offline_access was asked for, and it was dropped. Given no scopes,
            # oauthlib would take the request URI's ``scope`` again (offline_access,
            # the scope just dropped, also on the form's POST): grant what DOT grants
            # a request naming no scope, its defaults, and show them on the screen.
            defaults = get_scopes_backend().get_default_scopes(application=application, request=request)
            scopes = tuple(policy.without_offline_access(scopes_for_client(defaults, application)))
        action = policy.authorization_action(
            prompt=prompt,
            already_approved="consent" not in prompt and self._already_approved(application, scopes),
        )
        if action == policy.Decision.APPROVE:
            return self._authorize(application, scopes, credentials, allow=True)
        if action == policy.Decision.CONSENT_REQUIRED:
            consent_required = ConsentRequired(state=credentials.get("state"))
            return self.error_response(
                OAuthToolkitError(error=consent_required, redirect_uri=credentials["redirect_uri"]),
                application,
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
                **new_form_identity(),  # single use, and refused after a revocation
            }
        )
        form = self.get_form_class()(initial={"request": signed}, user=self.request.user)
        context = self.get_context_data(
            form=form,
            application=application,
            scopes=[(scope, descriptions.get(scope, scope)) for scope in scopes],
            offline_access=OFFLINE_ACCESS_SCOPE in scopes,
            # Loaded already by the offline-access check above: no query.
            client_pages=client_metadata.client_pages(application),
            switch_account_url=switch_account.switch_account_url(),
            switch_account_next=switch_account.signed_return_path(self.request),
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
        return live_token_covers(self.request.user, application, scopes)

    def _require_authentication(self, prompt, credentials, application):
        """OIDC Core 3.1.2.1, 3.1.2.3: ``prompt=login`` and ``max_age`` against this session.

        None when the session's authentication will do; otherwise the redirect to
        the login page (the request comes back afterwards and passes on that
        login), ``invalid_request`` for a malformed ``max_age``, or
        ``login_required`` (``prompt=none``, or back without logging in).
        """
        request = self.request
        try:
            max_age = policy.parse_max_age(request.GET.getlist("max_age"))
        except policy.MaxAgeError as exc:
            error = InvalidRequestError(description=str(exc), state=credentials.get("state"))
            return self.error_response(
                OAuthToolkitError(error=error, redirect_uri=credentials["redirect_uri"]), application
            )
        fingerprint = self._request_fingerprint()
        requested_at = authentication.reauthentication_requested_at(request, fingerprint)
        action = policy.authentication_action(
            prompt=prompt,
            max_age=max_age,
            auth_time=authentication.session_auth_time(request),
            reauthentication_requested_at=requested_at,
            now=timezone.now(),
        )
        if action == policy.Authentication.LOGIN:
            return self.handle_prompt_login()
        if requested_at is not None:
            authentication.forget_reauthentication(request, fingerprint)
        if action == policy.Authentication.LOGIN_REQUIRED:
            login_required = LoginRequired(state=credentials.get("state"))
            return self.error_response(
                OAuthToolkitError(error=login_required, redirect_uri=credentials["redirect_uri"]), application
            )
        return None

    def _request_fingerprint(self) -> str:
        return authentication.request_fingerprint(
            (key, value) for key, values in self.request.GET.lists() for value in values
        )

    def handle_no_permission(self):
        """An anonymous user: ``prompt=none`` answers ``login_required`` (OIDC Core 3.1.2.6).

        DOT builds that redirect itself, always in the query and without ``iss``.
        Otherwise the user is sent to log in (DOT's ``prompt=login`` and
        ``prompt=create`` handling included); with ``max_age``, the request passes
        on that login when it comes back: without the note, ``max_age=0`` would
        send the user to log in a second time (some time has passed since).
        """
        if "none" in self.prompt:
            return self.error_at_client(LoginRequired)
        if self.request.GET.get("max_age"):
            authentication.request_reauthentication(self.request, self._request_fingerprint())
        return super().handle_no_permission()

    def handle_prompt_login(self):
        """Send the user to log in, dropping only ``login`` from ``prompt``.

        DOT drops the whole parameter, which would silently lose a ``consent``
        sent alongside ``login`` and with it the user's chance to grant offline access.
        The session notes that this request sent the user to log in: it comes back
        without ``login`` and passes only on a login made since (not a second one).
        """
        authentication.request_reauthentication(self.request, self._request_fingerprint())
        parsed = urlparse(self.request.get_full_path())
        kept = authentication.without_login_prompt(parse_qsl(parsed.query, keep_blank_values=True))
        next_url = parsed._replace(query=urlencode(kept)).geturl()
        return redirect_to_login(next_url, resolve_url(self.get_login_url()), self.get_redirect_field_name())

    # POST -----------------------------------------------------------------------

    def form_valid(self, form):
        payload = form.cleaned_data["request"]
        credentials = payload["credentials"]
        application = get_application_model().objects.filter(client_id=credentials["client_id"]).first()
        if application is None:
            return self._invalid_request(_("The application no longer exists."))
        scopes = payload["scopes"]
        user = self.request.user
        self.response_type = credentials.get("response_type")
        try:
            with transaction.atomic():
                # Deny uses the form up too: it cannot be posted again as Allow.
                services.use_consent_form(payload["nonce"])
                if form.allowed:
                    # The form, the consent (its event and signal) and the code commit
                    # together: a code that cannot be created leaves no consent behind.
                    if payload["offline_via"] == policy.OfflineVia.SCREEN:
                        # OIDC Core 11: consent is on record before any refresh token can exist.
                        services.record_interactive_consent(user=user, application=application, scopes=scopes)
                    # Checked after recording: that locked the active consent, so a
                    # revocation committed meanwhile is seen here.
                    services.refuse_if_revoked_since(
                        user=user, application=application, rendered_at=payload["rendered_at"]
                    )
                    uri = self._create_code(scopes, credentials)
        except services.ConsentFormRefused as refused:
            return self._invalid_request(str(refused))
        except OAuthToolkitError as error:
            return self.error_response(error, application)
        if not form.allowed:
            return self._authorize(application, scopes, credentials, allow=False)
        return self.redirect(uri, application)

    def form_invalid(self, form):
        message = " ".join(str(error) for errors in form.errors.values() for error in errors)
        return self._invalid_request(message)

    # Answers to the client -------------------------------------------------------

    def error_at_client(self, error_class, description: str | None = None, *, before_other_errors=False):
        """Answer ``error_class`` at the client's redirect URI once the request shows it is genuine.

        The request is validated first (client, redirect URI): if those cannot be
        trusted the user gets the error page and nothing is redirected (RFC 6749
        4.1.2.1); if the request has another error, that one goes back instead, as
        DOT does for ``prompt=none``, unless ``before_other_errors``.
        """
        try:
            _scopes, credentials = self.validate_authorization_request(self.request)
        except OAuthToolkitError as error:
            oauthlib_error = error.oauthlib_error
            trusted = not isinstance(error, FatalClientError) and oauthlib_error.redirect_uri
            if before_other_errors and trusted:
                # oauthlib raises non-fatal errors only once client and redirect URI are valid.
                ours = error_class(description=description, state=oauthlib_error.state)
                return self.error_response(
                    OAuthToolkitError(error=ours, redirect_uri=oauthlib_error.redirect_uri), application=None
                )
            return self.error_response(error, application=None)
        self.response_type = credentials.get("response_type")
        refusal = error_class(description=description, state=credentials.get("state"))
        return self.error_response(
            OAuthToolkitError(error=refusal, redirect_uri=credentials["redirect_uri"]),
            credentials["request"].client,
        )

    def error_response(self, error, application, **kwargs):
        """An error redirect where the client reads its response (query or fragment), or the error page.

        DOT always puts the error in the query; an implicit or hybrid client reads the
        fragment (RFC 6749 4.2.2.1, OIDC Core 3.3.2.6). The page is for errors whose
        redirect cannot be trusted (FatalClientError: unknown client, unregistered or
        missing redirect URI) and for errors that know no redirect URI.
        """
        oauthlib_error = error.oauthlib_error
        if isinstance(error, FatalClientError):
            return super().error_response(error, application, **kwargs)  # DOT's page, never a redirect
        if not oauthlib_error.redirect_uri:
            # DOT would redirect to a bare "?error=..." on this site; nothing was validated.
            return self.render_to_response(
                {"error": oauthlib_error, **kwargs}, status=oauthlib_error.status_code
            )
        response_type = (
            self.response_type or oauthlib_error.response_type or self.request.GET.get("response_type")
        )
        modes = self.request.GET.getlist("response_mode")
        response_mode = (
            None  # a refused response_mode: the response type's default place
            if policy.response_mode_error(response_type, modes)
            else oauthlib_error.response_mode or self.request.GET.get("response_mode")
        )
        uri = add_params_to_uri(
            oauthlib_error.redirect_uri,
            oauthlib_error.twotuples,
            fragment=policy.answers_in_fragment(response_type, response_mode),
        )
        return self.redirect(uri, application)

    def redirect(self, redirect_to, application):
        """Every authorization response to the client names the issuer (RFC 9207 2).

        The value is discovery's ``issuer``; DOT's own ``iss`` (when its RFC 9700
        setting is on) is only on successful responses.
        """
        return super().redirect(
            with_issuer(redirect_to, oauth2_settings.oidc_issuer(self.request)), application
        )

    # Shared ---------------------------------------------------------------------

    def _authorize(self, application, scopes, credentials, *, allow: bool):
        try:
            uri = self._create_code(scopes, credentials, allow=allow)
        except OAuthToolkitError as error:
            return self.error_response(error, application)
        return self.redirect(uri, application)

    def _create_code(self, scopes, credentials, *, allow: bool = True) -> str:
        """Have DOT create the code (and any front-channel token); the redirect URI to answer with."""
        if allow and not scopes:
            # oauthlib would fall back to the request URI's scope: never grant what was not shown.
            raise OAuthToolkitError(
                error=InvalidScopeError(state=credentials.get("state")),
                redirect_uri=credentials["redirect_uri"],
            )
        mode_error = policy.response_mode_error(
            credentials.get("response_type"), self.request.GET.getlist("response_mode")
        )
        if mode_error is not None:
            # dispatch refused it for the URI's response_type; this is the signed one.
            raise OAuthToolkitError(
                error=InvalidRequestError(description=mode_error, state=credentials.get("state")),
                redirect_uri=credentials["redirect_uri"],
            )
        credentials = dict(credentials)
        # Stored with the code by the validator (GrantAuthentication), under a name no
        # oauthlib parameter has.
        credentials["offline_access_dpop_jkt"] = credentials.pop("dpop_jkt", "")
        # The code (and a hybrid response's ID token) carries when this session
        # authenticated; the validator stores it with the code (OIDC Core 2, auth_time).
        credentials["offline_access_auth_time"] = authentication.claimed_auth_time(
            authentication.session_auth_time(self.request), self.request.user
        )
        if isinstance(credentials.get("claims"), dict):
            credentials["claims"] = json.dumps(credentials["claims"])
        uri, _headers, _body, _status = self.create_authorization_response(
            request=self.request, scopes=" ".join(scopes), credentials=credentials, allow=allow
        )
        return uri

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


class OfflineAccessServerMetadataView(OAuthServerMetadataView):
    """RFC 8414 metadata: :func:`offline_access.metadata.server_metadata`, for this issuer only.

    Served at the RFC 8414 location (``/.well-known/oauth-authorization-server/o``
    for issuer ``http://host/o``, from :mod:`offline_access.well_known_urls`) and at
    the appended form under the app's URLs; any other path gets a 404 (RFC 8414 3.3).
    """

    def get(self, request, *args, **kwargs):
        if not metadata.serves_issuer(request):
            raise Http404("No authorization server with this issuer here.")
        response = JsonResponse(metadata.server_metadata(request))
        response["Access-Control-Allow-Origin"] = "*"
        return response


class OfflineAccessDiscoveryView(ConnectDiscoveryInfoView):
    """OpenID discovery: the same document as RFC 8414 (:mod:`offline_access.metadata`; SPEC P8)."""

    def get(self, request, *args, **kwargs):
        response = JsonResponse(metadata.server_metadata(request))
        response["Access-Control-Allow-Origin"] = "*"
        return response
