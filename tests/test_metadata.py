"""Server metadata: OpenID discovery and RFC 8414 agree with each other and with the server.

Both documents are fetched from where a strict client finds them, from the
issuer alone: ``{issuer}/.well-known/openid-configuration`` (OIDC Discovery 4)
and ``/.well-known/oauth-authorization-server{issuer path}`` (RFC 8414 3). Each
statement in them is then checked against the endpoint it describes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client
from django.urls import resolve
from oauth2_provider import views as dot_views
from oauth2_provider.settings import oauth2_settings

from offline_access import OFFLINE_ACCESS_SCOPE, languages, metadata
from offline_access.validators import DEVICE_CODE_GRANT

from . import factories
from .oauth import CHALLENGE, VERIFIER, authorize_url, exchange_code, get_code, redirect_params

DISCOVERY = "/o/.well-known/openid-configuration"
RFC8414 = "/.well-known/oauth-authorization-server/o"
#: The view behind each endpoint a document names: DOT's, or the app's subclass of it.
ENDPOINT_VIEWS = {
    "authorization_endpoint": dot_views.AuthorizationView,
    "token_endpoint": dot_views.TokenView,
    "revocation_endpoint": dot_views.RevokeTokenView,
    "introspection_endpoint": dot_views.IntrospectTokenView,
    "device_authorization_endpoint": dot_views.DeviceAuthorizationView,
    "userinfo_endpoint": dot_views.UserInfoView,
    "jwks_uri": dot_views.JwksInfoView,
    "end_session_endpoint": dot_views.RPInitiatedLogoutView,
}


def documents(api: Client, host: str = "testserver") -> tuple[dict, dict]:
    """Discovery, then the RFC 8414 document found from discovery's issuer alone."""
    response = api.get(DISCOVERY, HTTP_HOST=host)
    assert response.status_code == 200, response.content[:300]
    openid = response.json()
    response = api.get(metadata.server_metadata_path(openid["issuer"]), HTTP_HOST=host)
    assert response.status_code == 200, response.content[:300]
    return openid, response.json()


def basic_auth_header(application) -> str:
    """RFC 6749 2.3.1 client_secret_basic (these client ids and secrets need no form-encoding)."""
    return "Basic " + base64.b64encode(f"{application.client_id}:{factories.CLIENT_SECRET}".encode()).decode()


def jwt_claims(token: str) -> dict:
    """An ID token's payload (its signature is checked in tests/test_interop_authlib.py)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def userinfo(api: Client, access_token: str) -> dict:
    response = api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")
    assert response.status_code == 200, response.content[:300]
    return response.json()


@pytest.fixture
def named_user(db):
    return factories.UserFactory(username="alice", first_name="Alice", last_name="Liddell")


@pytest.fixture
def named_browser(named_user) -> Client:
    client = Client()
    client.force_login(named_user)
    return client


def tokens_for(browser: Client, api: Client, application, scope: str) -> dict:
    code = get_code(browser, application, scope=scope, prompt="consent")
    response = exchange_code(api, application, code)
    assert response.status_code == 200, response.content[:300]
    return response.json()


# Where the documents are ---------------------------------------------------------------------


def test_both_documents_at_their_well_known_locations_are_one_document(api, db):
    openid, rfc8414 = documents(api)
    assert openid["issuer"] == "http://testserver/o"
    assert metadata.server_metadata_path(openid["issuer"]) == RFC8414
    assert metadata.server_metadata_url(openid["issuer"]) == "http://testserver" + RFC8414
    assert rfc8414 == openid
    # The appended form some clients try (DOT's own location) says the same.
    assert api.get("/o/.well-known/oauth-authorization-server").json() == openid


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server",  # issuer http://testserver: not this server
        "/.well-known/oauth-authorization-server/other",
        "/.well-known/oauth-authorization-server/o/x",
        "/o/.well-known/oauth-authorization-server/o",  # stands for issuer http://testserver/o/o
    ],
)
def test_rfc8414_document_is_only_served_for_this_issuer(api, db, path):
    """RFC 8414 3.3: the issuer in the document is the one its URL was built from."""
    assert api.get(path).status_code == 404


def test_rfc8414_location_reverses_and_resolves_outside_dots_namespace():
    from django.urls import reverse

    path = reverse("offline_access_well_known:oauth-server-metadata", kwargs={"issuer_path": "o"})
    assert path == RFC8414
    assert resolve(path).func.view_class.__name__ == "OfflineAccessServerMetadataView"
    # DOT's names still point into the app's own URLs (RFC 9207 iss and discovery use them).
    assert reverse("oauth2_provider:oauth-server-metadata") == "/o/.well-known/oauth-authorization-server"


def test_issuer_is_the_id_tokens_iss(browser, api, application, db):
    openid, _ = documents(api)
    body = tokens_for(browser, api, application, "openid")
    assert jwt_claims(body["id_token"])["iss"] == openid["issuer"]


# Every endpoint named answers ---------------------------------------------------------------


@pytest.mark.parametrize("document", ["openid", "rfc8414"])
def test_every_endpoint_in_both_documents_answers(api, db, document):
    openid, rfc8414 = documents(api)
    data = openid if document == "openid" else rfc8414
    named = {key: value for key, value in data.items() if key.endswith("_endpoint") or key == "jwks_uri"}
    assert set(named) == set(ENDPOINT_VIEWS)
    for key, url in named.items():
        parsed = urlparse(url)
        assert (parsed.scheme, parsed.netloc) == ("http", "testserver"), url
        assert issubclass(resolve(parsed.path).func.view_class, ENDPOINT_VIEWS[key]), key
        for method in ("get", "post"):
            response = getattr(api, method)(parsed.path)
            assert response.status_code != 404, (key, method)
            assert response.status_code < 500, (key, method, response.content[:300])


# Grant and response types ------------------------------------------------------------------------


TOKEN_ENDPOINT_GRANTS = {
    "authorization_code",
    "password",
    "client_credentials",
    "refresh_token",
    DEVICE_CODE_GRANT,
}


def test_every_token_endpoint_grant_type_listed_is_routed(api, application):
    openid, _ = documents(api)
    listed = set(openid["grant_types_supported"])
    assert listed == TOKEN_ENDPOINT_GRANTS | {"implicit"}
    auth = basic_auth_header(application)
    for grant_type in sorted(listed & TOKEN_ENDPOINT_GRANTS):
        response = api.post("/o/token/", {"grant_type": grant_type}, HTTP_AUTHORIZATION=auth)
        assert response.status_code < 500, (grant_type, response.content[:300])
        assert response.json()["error"] != "unsupported_grant_type", grant_type
    # The probe can fail: a grant type the server does not route.
    response = api.post(
        "/o/token/", {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}, HTTP_AUTHORIZATION=auth
    )
    assert response.json()["error"] == "unsupported_grant_type"


#: Per response type, the DOT grant type an application needs to use it.
RESPONSE_TYPE_GRANTS = {
    "code": "authorization-code",
    "token": "implicit",
    "id_token": "implicit",
    "id_token token": "implicit",
    "code token": "openid-hybrid",
    "code id_token": "openid-hybrid",
    "code id_token token": "openid-hybrid",
}


def test_every_response_type_listed_gets_an_answer(api, named_browser):
    """Each listed response type returns what it names; the hybrid ID token carries c_hash."""
    openid, _ = documents(api)
    assert set(openid["response_types_supported"]) == set(RESPONSE_TYPE_GRANTS)
    for response_type in openid["response_types_supported"]:
        application = factories.ApplicationFactory(
            authorization_grant_type=RESPONSE_TYPE_GRANTS[response_type], skip_authorization=True
        )
        response = named_browser.get(authorize_url(application, scope="openid", response_type=response_type))
        assert response.status_code == 302, (response_type, response.content[:300])
        location = urlparse(response["Location"])
        params = {key: values[0] for key, values in parse_qs(location.fragment or location.query).items()}
        returned = {"access_token" if part == "token" else part for part in response_type.split()}
        assert returned <= set(params), (response_type, params)
        if "code" in returned and "id_token" in returned:
            assert "c_hash" in jwt_claims(params["id_token"])


def test_pkce_methods_are_what_the_authorization_endpoint_accepts(browser, api, application):
    openid, _ = documents(api)
    assert openid["code_challenge_methods_supported"] == ["S256"]
    plain = redirect_params(
        browser.get(authorize_url(application, code_challenge="x" * 43, code_challenge_method="plain"))
    )
    assert plain["error"] == "invalid_request"
    code = get_code(
        browser, application, scope="openid", code_challenge=CHALLENGE, code_challenge_method="S256"
    )
    assert exchange_code(api, application, code).status_code == 200


def test_scopes_and_prompts(api, db):
    openid, _ = documents(api)
    assert OFFLINE_ACCESS_SCOPE in openid["scopes_supported"]  # SPEC P8
    assert openid["scopes_supported"] == sorted(oauth2_settings.SCOPES)
    assert openid["prompt_values_supported"] == ["consent", "login", "none"]
    assert openid["authorization_response_iss_parameter_supported"] is True
    # Not honoured, so not claimed (absent request_uri_parameter_supported means true).
    assert openid["request_parameter_supported"] is False
    assert openid["request_uri_parameter_supported"] is False
    assert openid["claims_parameter_supported"] is False


def test_ui_locales_supported_lists_the_sites_languages_the_pages_are_translated_into(api, db, settings):
    """RFC 8414 2 / OIDC Discovery 3: the languages ui_locales can pick, as BCP47 tags."""
    openid, rfc8414 = documents(api)
    # The example site lists English and exactly the languages the app ships.
    expected = ["en", "de", "es", "fr", "ja", "nl", "pt-BR"]
    assert [code for code, _name in settings.LANGUAGES] == ["en", "de", "es", "fr", "ja", "nl", "pt-br"]
    assert openid["ui_locales_supported"] == rfc8414["ui_locales_supported"] == expected


def test_ui_locales_supported_leaves_out_languages_without_the_apps_words(api, db, tmp_path, settings):
    settings.LANGUAGES = [("en-gb", "English"), ("it", "Italiano"), ("de", "Deutsch"), ("sv", "Svenska")]
    # Django has Italian and Swedish catalogues of its own, but the app's pages are not in them.
    assert api.get(DISCOVERY).json()["ui_locales_supported"] == ["en-GB", "de"]
    # A site that adds Swedish (its catalogue in LOCALE_PATHS) gets it advertised.
    (tmp_path / "sv" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "sv" / "LC_MESSAGES" / "django.mo").write_bytes(
        (Path(languages.LOCALE_DIR) / "de" / "LC_MESSAGES" / "django.mo").read_bytes()
    )
    settings.LOCALE_PATHS = [tmp_path]
    assert api.get(DISCOVERY).json()["ui_locales_supported"] == ["en-GB", "de", "sv"]


def test_rfc9449_5_1_dpop_algorithms_in_both_documents(api, db):
    """What the token endpoint accepts in DPoP proofs (offline_access.dpop; tests/test_dpop.py)."""
    openid, rfc8414 = documents(api)
    expected = ["ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256"]
    assert openid["dpop_signing_alg_values_supported"] == expected
    assert rfc8414["dpop_signing_alg_values_supported"] == expected


# Client authentication ---------------------------------------------------------------------------


def test_auth_methods_listed_are_the_ones_that_work(browser, api, application, native_application):
    openid, _ = documents(api)
    assert openid["token_endpoint_auth_methods_supported"] == [
        "client_secret_post",
        "client_secret_basic",
        "none",
    ]
    assert (
        openid["revocation_endpoint_auth_methods_supported"]
        == openid["token_endpoint_auth_methods_supported"]
    )
    assert openid["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_post",
        "client_secret_basic",
    ]

    # client_secret_post and none: the helpers send client_id (and secret) in the body.
    post = tokens_for(browser, api, application, "openid")
    public = tokens_for(browser, api, native_application, "openid")
    # client_secret_basic at the token endpoint.
    code = get_code(browser, application, scope="openid", prompt="consent")
    response = api.post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": application.redirect_uris.split()[0],
            "code_verifier": VERIFIER,
        },
        HTTP_AUTHORIZATION=basic_auth_header(application),
    )
    assert response.status_code == 200, response.content[:300]
    # Introspection by a confidential client, both ways.
    for extra, data in (
        ({"HTTP_AUTHORIZATION": basic_auth_header(application)}, {}),
        ({}, {"client_id": application.client_id, "client_secret": factories.CLIENT_SECRET}),
    ):
        answer = api.post("/o/introspect/", {"token": post["access_token"], **data}, **extra)
        assert answer.status_code == 200 and answer.json()["active"] is True
    # Revocation: a public client with its client_id only (none), a confidential one with Basic.
    assert (
        api.post("/o/revoke_token/", {"token": public["access_token"], "client_id": "phone-app"}).status_code
        == 200
    )
    assert api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {public['access_token']}").status_code == 401
    response = api.post(
        "/o/revoke_token/", {"token": post["access_token"]}, HTTP_AUTHORIZATION=basic_auth_header(application)
    )
    assert response.status_code == 200
    assert api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {post['access_token']}").status_code == 401


# Claims: claims_supported is what userinfo and ID tokens return -----------------------------


def test_claims_supported_is_exactly_what_userinfo_and_id_tokens_return(named_browser, api, application):
    openid, _ = documents(api)
    body = tokens_for(named_browser, api, application, f"openid profile email {OFFLINE_ACCESS_SCOPE}")
    id_token = jwt_claims(body["id_token"])
    info = userinfo(api, body["access_token"])
    assert set(info) <= set(openid["claims_supported"])
    assert set(id_token) <= set(openid["claims_supported"])
    # c_hash: in hybrid responses' ID tokens (test_every_response_type_listed_gets_an_answer).
    assert set(openid["claims_supported"]) == set(info) | set(id_token) | {"c_hash"}


def test_userinfo_returns_the_claims_of_each_granted_scope(named_browser, api, application, named_user):
    def claims(scope):
        return userinfo(api, tokens_for(named_browser, api, application, scope)["access_token"])

    sub = str(named_user.pk)
    assert claims("openid") == {"sub": sub}
    assert claims("openid profile") == {
        "sub": sub,
        "name": "Alice Liddell",
        "given_name": "Alice",
        "family_name": "Liddell",
        "preferred_username": "alice",
    }
    # Django never verifies an address: said so rather than left to guess.
    assert claims("openid email") == {"sub": sub, "email": "alice@example.com", "email_verified": False}


def test_userinfo_leaves_out_claims_the_user_has_no_value_for(browser, api, application, user):
    user.email = ""
    user.save()
    body = tokens_for(browser, api, application, "openid profile email")
    assert userinfo(api, body["access_token"]) == {"sub": str(user.pk), "preferred_username": "alice"}
    assert set(jwt_claims(body["id_token"])) & {"name", "given_name", "email", "email_verified"} == set()


def test_claims_supported_follows_the_validator(api, dot_settings):
    """A site on the app's own validator (no extra claims) is not told profile claims exist."""
    dot_settings(OAUTH2_VALIDATOR_CLASS="offline_access.validators.OfflineAccessValidator")
    openid, rfc8414 = documents(api)
    assert openid == rfc8414
    assert set(openid["claims_supported"]) == metadata.ID_TOKEN_CLAIMS


def test_claims_of_an_unsupported_scope_are_not_listed(api, dot_settings):
    scopes = {name: text for name, text in oauth2_settings.SCOPES.items() if name != "email"}
    dot_settings(SCOPES=scopes)
    openid, _ = documents(api)
    assert "email" not in openid["claims_supported"] and "name" in openid["claims_supported"]


# Under other settings ----------------------------------------------------------------------------


def test_device_grant_without_verification_uri_is_not_advertised(api, dot_settings):
    dot_settings(OAUTH_DEVICE_VERIFICATION_URI=None)
    openid, rfc8414 = documents(api)
    assert openid == rfc8414
    assert DEVICE_CODE_GRANT not in openid["grant_types_supported"]
    assert "device_authorization_endpoint" not in openid


def test_device_authorization_endpoint_refuses_without_verification_uri(api, dot_settings, cli):
    """RFC 8628 3.2: verification_uri is required; without one DOT answered 200 with null."""
    dot_settings(OAUTH_DEVICE_VERIFICATION_URI=None)
    response = api.post(
        "/o/device-authorization/", "client_id=deploy-cli", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert response["Cache-Control"] == "no-store"


def test_device_grant_with_verification_uri_from_extra_server_kwargs(api, dot_settings):
    dot_settings(
        OAUTH_DEVICE_VERIFICATION_URI=None,
        EXTRA_SERVER_KWARGS={"verification_uri": "https://id.example.com/o/device/"},
    )
    openid, _ = documents(api)
    assert DEVICE_CODE_GRANT in openid["grant_types_supported"]
    assert openid["device_authorization_endpoint"] == "http://testserver/o/device-authorization/"


def test_oidc_iss_endpoint_sets_issuer_and_endpoint_host(api, dot_settings):
    dot_settings(OIDC_ISS_ENDPOINT="https://id.example.com/o")
    openid, rfc8414 = documents(api)
    assert openid == rfc8414
    assert openid["issuer"] == "https://id.example.com/o"
    for key in ENDPOINT_VIEWS:
        assert openid[key].startswith("https://id.example.com/o/"), key
    assert metadata.server_metadata_url(openid["issuer"]) == "https://id.example.com" + RFC8414


def test_oidc_iss_endpoint_without_path_is_served_at_the_root(api, dot_settings):
    dot_settings(OIDC_ISS_ENDPOINT="https://id.example.com")
    response = api.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.json()["issuer"] == "https://id.example.com"
    assert response.json() == api.get(DISCOVERY).json()
    # ...and no longer under /o/ or at /o, which stand for issuer .../o.
    assert api.get("/o/.well-known/oauth-authorization-server").status_code == 404
    assert api.get(RFC8414).status_code == 404


def test_public_clients_unsupported(api, dot_settings):
    dot_settings(OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED=["client_secret_basic"])
    openid, rfc8414 = documents(api)
    assert openid == rfc8414
    for key in ("token", "revocation", "introspection"):
        assert openid[f"{key}_endpoint_auth_methods_supported"] == ["client_secret_basic"]


def test_methods_dot_cannot_check_are_not_advertised(api, dot_settings):
    dot_settings(
        OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED=["private_key_jwt", "client_secret_basic", "none"]
    )
    openid, _ = documents(api)
    assert openid["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "none"]
    assert openid["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]


def test_rfc9700_gates_remove_what_dot_then_refuses(api, dot_settings):
    dot_settings(COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT=True, COMPLIANT_BCP_RFC9700_PASSWORD_GRANT=True)
    openid, rfc8414 = documents(api)
    assert openid == rfc8414
    assert openid["response_types_supported"] == [
        "code",
        "code token",
        "code id_token",
        "code id_token token",
    ]
    assert "password" not in openid["grant_types_supported"]
    # Hybrid responses still return tokens from the authorization endpoint: implicit stays.
    assert "implicit" in openid["grant_types_supported"]


def test_registration_prompt_when_enabled(api, dot_settings):
    dot_settings(OIDC_RP_INITIATED_REGISTRATION_ENABLED=True)
    openid, rfc8414 = documents(api)
    assert (
        openid["prompt_values_supported"]
        == rfc8414["prompt_values_supported"]
        == ["consent", "create", "login", "none"]
    )


def test_without_oidc_rfc8414_still_describes_the_oauth_server(api, dot_settings):
    dot_settings(OIDC_ENABLED=False)
    assert api.get(DISCOVERY).status_code == 404
    response = api.get(RFC8414)
    assert response.status_code == 200
    data = response.json()
    assert data["issuer"] == "http://testserver/o"
    assert data["response_types_supported"] == ["code", "token"]
    assert "userinfo_endpoint" not in data and "claims_supported" not in data
    assert data["token_endpoint_auth_methods_supported"] == list(
        oauth2_settings.OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED
    )
