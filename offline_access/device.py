"""The device authorization grant (RFC 8628) with offline access (SPEC P7).

DOT 3.4.1's device flow does not work with oauthlib 4.0.1; these views, with
``OfflineAccessValidator.validate_device_code``, supply what is missing, and make
the user-code approval page the consent screen.
"""

from __future__ import annotations

import dataclasses

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import FormView
from oauth2_provider.compat import login_not_required
from oauth2_provider.models import (
    DeviceCodeResponse,
    get_application_model,
    get_device_grant_model,
)
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.views import TokenView
from oauth2_provider.views.device import DeviceAuthorizationView, DeviceGrantStatusView, DeviceUserCodeView

from . import OFFLINE_ACCESS_SCOPE, policy, services
from .conf import settings
from .forms import DeviceDecisionForm
from .validators import DEVICE_CODE_GRANT, client_may_have_offline_access


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
