"""How the REST API authenticates a bearer token: from the Authorization header only.

DOT's ``OAuth2Authentication`` asks oauthlib for the token, and oauthlib also takes it
from an ``access_token`` parameter in the URI query or a form body. A token in a URL
lands in server and proxy access logs, browser history and Referer headers (RFC 6750
2.3 and 5.3; RFC 9700 4.3.2 says access tokens must not be passed in the query), and
this API has no client that needs either form, so it refuses them outright. DOT's
``COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT`` is not used for this: it is the site's
setting for all of DOT's resource views, it leaves form bodies alone, and it turns a
token in the query into an anonymous request instead of an error a client developer
can read.
"""

from __future__ import annotations

from django.conf import settings as django_settings
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.request import Request, is_form_media_type

#: The parameter name RFC 6750 2.2 and 2.3 define for a token outside the header.
ACCESS_TOKEN_PARAMETER = "access_token"


class TokenOutsideAuthorizationHeader(APIException):
    """RFC 6750 3.1 ``invalid_request``: the token came by a transport this API refuses."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_request"
    default_detail = (
        "Send the access token in the Authorization header (Authorization: Bearer <token>), "
        "never as an access_token parameter in the URL or a form body."
    )

    def __init__(self) -> None:
        super().__init__()
        # DRF's exception handler copies this into the response's WWW-Authenticate header
        # (RFC 6750 3: the error code goes in the challenge).
        self.auth_header = 'Bearer realm="api", error="invalid_request"'


class HeaderBearerAuthentication(OAuth2Authentication):
    """DOT's bearer token authentication, refusing any ``access_token`` query or form parameter.

    RFC 6750 2.1 (the Authorization header) is the one transport every resource server
    must support and the only one this API accepts; 2.2 (form body) and 2.3 (URI query)
    are optional, and RFC 9700 4.3.2 forbids the query. The refusal comes before any
    token lookup and also when a valid header or a session comes with the parameter:
    the request would still have put a token where it gets logged, and RFC 6750 3.1
    counts "more than one method" as ``invalid_request``.
    """

    def authenticate(self, request: Request):
        if ACCESS_TOKEN_PARAMETER in request.query_params:
            raise TokenOutsideAuthorizationHeader()
        # request.POST is what DOT hands oauthlib as the body; DRF fills it for any
        # method, GET included, when the body is a form.
        if is_form_media_type(request.content_type) and ACCESS_TOKEN_PARAMETER in request.POST:
            raise TokenOutsideAuthorizationHeader()
        return super().authenticate(request)


class StorableSessionAuthentication(SessionAuthentication):
    """DRF's session authentication; a session cookie holding a NUL is no session.

    Django's database session store looks the key up as is, and PostgreSQL refuses a
    NUL in a query: a 500. A cookie can carry one in plain ASCII (``"\\000"`` inside
    a quoted value, which Python's cookie parser unquotes). No session engine issues
    such a key, so the request is simply anonymous.
    """

    def authenticate(self, request: Request):
        if "\x00" in request.COOKIES.get(django_settings.SESSION_COOKIE_NAME, ""):
            return None
        return super().authenticate(request)


class DPoPAuthentication(HeaderBearerAuthentication):
    """Access tokens as ``Authorization: Bearer`` or, DPoP-bound, as ``Authorization: DPoP`` (RFC 9449 7).

    A ``DPoP``-scheme request must carry a DPoP proof of the token's key with its
    ``ath`` (:func:`offline_access.dpop.prepare_resource_request`); a DPoP-bound token
    sent as Bearer is refused (RFC 9449 7.2). Use it in place of DOT's
    ``OAuth2Authentication``: ``authentication_classes = [DPoPAuthentication, ...]``,
    also exported as ``offline_access.dpop.DPoPAuthentication``.
    """

    #: The challenge naming why a DPoP request failed, for this request's 401.
    failed_challenge: str | None = None

    def authenticate(self, request: Request):
        from .. import dpop

        try:
            dpop.prepare_resource_request(request._request)
        except dpop.DPoPError as error:
            # DRF asks authenticate_header for the 401's challenge: this one names the error.
            # (DRF makes one authenticator per request, so the instance may keep it.)
            self.failed_challenge = dpop.resource_challenge(error.error, error.description)
            raise AuthenticationFailed(error.description) from None
        return super().authenticate(request)

    def authenticate_header(self, request: Request) -> str:
        from .. import dpop

        if self.failed_challenge:
            return self.failed_challenge
        return f"{super().authenticate_header(request)}, {dpop.resource_challenge()}"
