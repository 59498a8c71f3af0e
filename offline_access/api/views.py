"""Thin API views over offline_access.services: the same operations, events and checks as admin."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils.cache import add_never_cache_headers
from oauth2_provider.compat import login_not_required
from rest_framework import generics, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.schemas.openapi import AutoSchema
from rest_framework.views import APIView

from .. import services
from ..models import Consent, ConsentEvent, OfflineTokenFamily
from . import serializers
from .authentication import DPoPAuthentication, StorableSessionAuthentication
from .parsers import API_PARSERS
from .permissions import ActsForSignedInUser, HasModelPermission, StaffSession

VIEW_CONSENT = "offline_access.view_consent"
REVOKE_CONSENT = "offline_access.revoke_consent"
REVOKE_TOKEN_FAMILY = "offline_access.revoke_token_family"
GRANT_ENDURING_CONSENT = "offline_access.grant_enduring_consent"


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class Schema(AutoSchema):
    """OpenAPI for views that name their request and response serializers."""

    def get_request_serializer(self, path, method):
        serializer = getattr(self.view, "request_serializer", None)
        return serializer() if serializer else super().get_request_serializer(path, method)

    def get_response_serializer(self, path, method):
        serializer = getattr(self.view, "response_serializer", None)
        return serializer() if serializer else super().get_response_serializer(path, method)

    def get_responses(self, path, method):
        responses = super().get_responses(path, method)
        if method == "POST" and getattr(self.view, "response_status", 201) == 200 and "201" in responses:
            responses = {"200": responses.pop("201"), **responses}
        return responses


class Base(APIView):
    """Session (with CSRF) or a DOT bearer token in the Authorization header, whatever the
    site's DRF defaults; lists paginate."""

    # Token first: an unauthenticated request gets 401 with a Bearer challenge (RFC 6750).
    authentication_classes = [DPoPAuthentication, StorableSessionAuthentication]
    parser_classes = API_PARSERS
    schema = Schema(tags=["offline access"])

    @classmethod
    def as_view(cls, **initkwargs):
        """Exempt from Django 5.1+'s ``LoginRequiredMiddleware``: these views authenticate
        their callers and answer 401/403 themselves; a bearer client must never get a
        redirect to a login page. DRF marks its views so only from 3.16; the app
        supports 3.14 and 3.15 too."""
        return login_not_required(super().as_view(**initkwargs))

    def finalize_response(self, request, response, *args, **kwargs):
        """Every answer, errors included, says ``no-store``: they carry account data or
        answer credentials, and no browser or shared cache may keep them (RFC 9111 5.2.2.5)."""
        response = super().finalize_response(request, response, *args, **kwargs)
        add_never_cache_headers(response)
        return response


class RevokeView(Base):
    request_serializer = serializers.RevokeRequestSerializer
    response_serializer = serializers.RevocationResultSerializer
    response_status = 200


class StaffOnly(Base):
    """For the staff endpoints: a signed-in staff session only, with the model permissions.

    The bearer authentication stays in the list so that a token is recognised and
    refused by name (StaffSession) rather than silently ignored. No challenge is sent:
    a 401 must carry one (RFC 9110 15.5.2), and a Bearer challenge would invite a token
    these endpoints never accept, so DRF answers an anonymous request 403.
    """

    permission_classes = [StaffSession, HasModelPermission]

    def get_authenticate_header(self, request) -> str:
        return ""  # DRF answers 403 when there is no challenge


def _result(result) -> Response:
    return Response(serializers.RevocationResultSerializer(result).data)


def _reason(request) -> str:
    body = serializers.RevokeRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return body.validated_data["reason"]


# The signed-in user -----------------------------------------------------------------


class MyConsentList(Base, generics.ListAPIView):
    """The applications holding offline access to your account (your consents in force)."""

    permission_classes = [ActsForSignedInUser]
    serializer_class = serializers.ConsentSerializer
    pagination_class = Pagination

    def get_queryset(self):
        return (
            Consent.objects.active()
            .filter(user=self.request.user)
            .with_usage()
            .select_related("application")
            .order_by("-granted_at", "-pk")
        )


class MyDeviceList(Base, generics.ListAPIView):
    """Your devices and installations holding offline access (live token families)."""

    permission_classes = [ActsForSignedInUser]
    serializer_class = serializers.DeviceSerializer
    pagination_class = Pagination

    def get_queryset(self):
        return (
            OfflineTokenFamily.objects.live()
            .filter(user=self.request.user)
            .with_activity()
            .select_related("application")
            .order_by("-created_at", "-pk")
        )


class RevokeMyConsent(RevokeView):
    """Revoke one of your consents and every token issued under it."""

    permission_classes = [ActsForSignedInUser]

    def post(self, request, pk: int):
        consent = get_object_or_404(Consent.objects.filter(user_id=request.user.pk), pk=pk)
        return _result(
            services.revoke_consents(
                Consent.objects.filter(pk=consent.pk),
                actor=request.user,
                reason=_reason(request),
                via=ConsentEvent.Via.API,
            )
        )


class RevokeMyDevice(RevokeView):
    """Revoke the tokens of one of your devices; the application keeps its consent."""

    permission_classes = [ActsForSignedInUser]

    def post(self, request, pk: int):
        family = get_object_or_404(OfflineTokenFamily.objects.filter(user_id=request.user.pk), pk=pk)
        return _result(
            services.revoke_token_families(
                OfflineTokenFamily.objects.filter(pk=family.pk),
                actor=request.user,
                reason=_reason(request),
                via=ConsentEvent.Via.API,
            )
        )


# Staff ------------------------------------------------------------------------------


class ConsentList(StaffOnly, generics.ListAPIView):
    """All consents. Filters: ``user`` (username), ``application`` (client ID), ``kind``, ``state``."""

    required_permissions = {"GET": VIEW_CONSENT}
    serializer_class = serializers.StaffConsentSerializer
    pagination_class = Pagination

    def get_queryset(self):
        consents = (
            Consent.objects.with_usage().select_related("user", "application").order_by("-granted_at", "-pk")
        )
        filters = serializers.ConsentFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        if params.get("user"):
            consents = consents.filter(user__username=params["user"])
        if params.get("application"):
            consents = consents.filter(application__client_id=params["application"])
        if params.get("kind"):
            consents = consents.filter(kind=params["kind"])
        if params.get("state"):
            consents = consents.in_state(params["state"])
        return consents


class GrantEnduringConsent(StaffOnly):
    """Record (or renew: 200) an enduring consent for a user and application (SPEC C3)."""

    request_serializer = serializers.EnduringConsentRequestSerializer
    response_serializer = serializers.StaffConsentSerializer

    required_permissions = {"POST": GRANT_ENDURING_CONSENT}

    def post(self, request):
        body = serializers.EnduringConsentRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        consent, created = services.grant_enduring_consent(
            **body.validated_data, actor=request.user, via=ConsentEvent.Via.API
        )
        consent = Consent.objects.with_usage().select_related("user", "application").get(pk=consent.pk)
        return Response(
            serializers.StaffConsentSerializer(consent).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class RevokeConsent(StaffOnly, RevokeView):
    """Revoke one consent and every token issued under it (SPEC C5)."""

    required_permissions = {"POST": REVOKE_CONSENT}

    def post(self, request, pk: int):
        consent = get_object_or_404(Consent, pk=pk)
        return _result(
            services.revoke_consents(
                Consent.objects.filter(pk=consent.pk),
                actor=request.user,
                reason=_reason(request),
                via=ConsentEvent.Via.API,
            )
        )


class RevokeEverything(StaffOnly, RevokeView):
    """Revoke all offline access of a user, to an application, or of a user to an application."""

    request_serializer = serializers.RevokeEverythingRequestSerializer

    required_permissions = {"POST": REVOKE_CONSENT}

    def post(self, request):
        body = serializers.RevokeEverythingRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        scope = {
            key: body.validated_data[key] for key in ("user", "application") if body.validated_data.get(key)
        }
        return _result(
            services.revoke_everything(
                consents=Consent.objects.filter(**scope),
                families=OfflineTokenFamily.objects.filter(**scope),
                actor=request.user,
                reason=body.validated_data["reason"],
                via=ConsentEvent.Via.API,
            )
        )
