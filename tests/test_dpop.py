"""DPoP (RFC 9449): proofs at the token endpoint, key-bound token families, bound access tokens."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import call_command
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from oauth2_provider.models import get_access_token_model

from offline_access import dpop as dpop_module
from offline_access import policy
from offline_access.checks import check_dpop_replay_cache, check_settings
from offline_access.models import ClientPolicy, DPoPBoundAccessToken, GrantAuthentication, OfflineTokenFamily

from .dpop import (
    REDIS_URL,
    TOKEN_URL,
    exchange,
    jkt,
    new_key,
    post_token,
    proof,
    refresh,
    require_redis,
    resource_proof,
    unsigned,
    userinfo,
)
from .oauth import authorize_url, get_code, redirect_params, stored_checksum
from .test_device import DEVICE_CODE_GRANT, approve, form_post, start, waited

# Helpers ------------------------------------------------------------------------------------------


def bound_tokens(browser, api, application, key, **authorize):
    """A code flow whose exchange carries a proof of ``key``; the token response."""
    code = get_code(browser, application, prompt="consent", **authorize)
    response = exchange(api, application, code, proof(key))
    assert response.status_code == 200, response.content
    return response.json()


def assert_dpop_error(response, error="invalid_dpop_proof"):
    assert response.status_code == 400, (response.status_code, response.content)
    body = response.json()
    assert body["error"] == error, body
    assert response["Cache-Control"] == "no-store"
    return body


def family_of(refresh_token: str) -> OfflineTokenFamily:
    from oauth2_provider.models import get_refresh_token_model

    row = get_refresh_token_model().objects.get(token_checksum=stored_checksum(refresh_token))
    return OfflineTokenFamily.objects.get(token_family=row.token_family)


@pytest.fixture
def key():
    return new_key()


@pytest.fixture
def code(browser, native_application):
    return get_code(browser, native_application, prompt="consent")


# RFC 9449 4.3: every rejection, on an otherwise good code exchange ---------------------------------

_other = new_key()


def _bad_proofs(key):
    now = int(time.time())
    return {
        "typ missing": proof(key, omit=("typ",)),
        "typ JWT": proof(key, header={"typ": "JWT"}),
        "alg none": unsigned(
            {"typ": "dpop+jwt", "alg": "none", "jwk": key.export_public(as_dict=True)},
            {"jti": "a", "htm": "POST", "htu": TOKEN_URL, "iat": now},
        ),
        "alg HS256": proof(
            new_key("oct", size=256),
            alg="HS256",
            header={"jwk": key.export_public(as_dict=True)},
        ),
        "alg not listed": unsigned(
            {"typ": "dpop+jwt", "alg": "RS1", "jwk": key.export_public(as_dict=True)},
            {"jti": "a", "htm": "POST", "htu": TOKEN_URL, "iat": now},
            b"x",
        ),
        "no jwk": proof(key, omit=("jwk",)),
        "private key in jwk": proof(key, header={"jwk": key.export_private(as_dict=True)}),
        "symmetric jwk": proof(key, header={"jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
        "signed by another key": proof(key, sign_with=_other),
        "jwk of another key": proof(key, header={"jwk": _other.export_public(as_dict=True)}),
        "htm GET": proof(key, htm="GET"),
        "htm lower case": proof(key, htm="post"),
        "htu of another endpoint": proof(key, htu="http://testserver/o/revoke_token/"),
        "htu of another host": proof(key, htu="http://evil.example/o/token/"),
        "htu https": proof(key, htu="https://testserver/o/token/"),
        "htu missing": proof(key, omit=("htu",)),
        "iat stale": proof(key, iat=now - 600),
        "iat future": proof(key, iat=now + 600),
        "iat string": proof(key, iat=str(now)),
        "iat missing": proof(key, omit=("iat",)),
        "jti missing": proof(key, omit=("jti",)),
        "jti empty": proof(key, jti=""),
        "jti too long": proof(key, jti="j" * 1000),
        "crit header": proof(key, header={"crit": ["b64"], "b64": True}),
        "two headers": proof(key) + ", " + proof(key),
        "not a JWT": "not-a-jwt",
        "JSON serialization": '{"payload":"e30","signatures":[]}',
        "empty": "",
        "huge": "a" * 20000 + ".b.c",
        "header not JSON": "e30x.e30.e30",
        "header a list": unsigned([1], {}),
        "payload a list": unsigned(
            {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.export_public(as_dict=True)}, []
        ),
    }


BAD_PROOF_NAMES = list(_bad_proofs(new_key()))


@pytest.mark.parametrize("name", BAD_PROOF_NAMES)
def test_rfc9449_4_3_bad_proof_is_invalid_dpop_proof(api, native_application, code, key, name):
    response = exchange(api, native_application, code, _bad_proofs(key)[name])

    body = assert_dpop_error(response)
    assert "error_description" in body
    # Nothing was issued, and the code still works with a good proof.
    assert exchange(api, native_application, code, proof(key)).status_code == 200


@pytest.mark.parametrize("name", BAD_PROOF_NAMES)
def test_rfc9449_4_3_bad_proof_refused_on_refresh_too(browser, api, native_application, key, name):
    tokens = bound_tokens(browser, api, native_application, key)

    assert_dpop_error(refresh(api, native_application, tokens["refresh_token"], _bad_proofs(key)[name]))


def test_rfc9449_11_1_replayed_proof_is_refused(browser, api, native_application, key):
    first_code = get_code(browser, native_application, prompt="consent")
    second_code = get_code(browser, native_application, prompt="consent")
    once = proof(key)

    assert exchange(api, native_application, first_code, once).status_code == 200
    body = assert_dpop_error(exchange(api, native_application, second_code, once))
    assert "jti" in body["error_description"]


def test_same_jti_with_another_key_is_another_proof(browser, api, native_application, key):
    first_code = get_code(browser, native_application, prompt="consent")
    second_code = get_code(browser, native_application, prompt="consent")

    assert exchange(api, native_application, first_code, proof(key, jti="same")).status_code == 200
    assert exchange(api, native_application, second_code, proof(new_key(), jti="same")).status_code == 200


@pytest.mark.parametrize(
    "htu",
    [
        "http://testserver/o/token/",
        "HTTP://TESTSERVER/o/token/",
        "http://testserver:80/o/token/",
        "http://testserver/o/token/?ignored=1#and-this",
        "http://testserver/o/%74oken/",
    ],
)
def test_rfc9449_4_3_htu_is_compared_normalized(api, native_application, code, key, htu):
    assert exchange(api, native_application, code, proof(key, htu=htu)).status_code == 200


def test_htu_follows_the_scheme_django_sees(api, native_application, code, key, settings):
    """Behind a TLS proxy, SECURE_PROXY_SSL_HEADER makes the token endpoint https."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    # As a proxy forwards it: the client's Host header, the scheme in X-Forwarded-Proto.
    forwarded = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_HOST": "testserver"}
    http = exchange(api, native_application, code, proof(key), **forwarded)
    assert_dpop_error(http)
    https = exchange(
        api, native_application, code, proof(key, htu="https://testserver/o/token/"), **forwarded
    )
    assert https.status_code == 200, https.content


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: new_key("EC", crv="P-256"),
        lambda: new_key("EC", crv="P-384"),
        lambda: new_key("OKP", crv="Ed25519"),
        lambda: new_key("RSA", size=2048),
    ],
    ids=["ES256", "ES384", "EdDSA", "PS256"],
)
def test_asymmetric_algorithms_are_accepted(api, native_application, code, make_key):
    key = make_key()
    alg = {"P-384": "ES384"}.get(key.get("crv"))
    response = exchange(api, native_application, code, proof(key, alg=alg))

    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"


def test_rs256_with_a_short_rsa_key_is_refused(api, native_application, code):
    assert_dpop_error(exchange(api, native_application, code, proof(new_key("RSA", size=1024), alg="RS256")))


# Binding (RFC 9449 5, 6) ----------------------------------------------------------------------------


def test_rfc9449_5_code_exchange_with_proof_binds_the_family(browser, api, native_application, key):
    tokens = bound_tokens(browser, api, native_application, key)

    assert tokens["token_type"] == "DPoP"
    assert family_of(tokens["refresh_token"]).dpop_jkt == jkt(key)
    access = get_access_token_model().objects.get(token_checksum=stored_checksum(tokens["access_token"]))
    assert DPoPBoundAccessToken.objects.get(token_checksum=access.token_checksum).jkt == jkt(key)


def test_without_a_proof_everything_stays_bearer(browser, api, native_application):
    code = get_code(browser, native_application, prompt="consent")
    tokens = exchange(api, native_application, code).json()

    assert tokens["token_type"] == "Bearer"
    assert family_of(tokens["refresh_token"]).dpop_jkt == ""
    assert not DPoPBoundAccessToken.objects.exists()
    again = refresh(api, native_application, tokens["refresh_token"])
    assert again.status_code == 200 and again.json()["token_type"] == "Bearer"


def test_rfc9449_5_bound_refresh_with_the_same_key(browser, api, native_application, key):
    tokens = bound_tokens(browser, api, native_application, key)

    response = refresh(api, native_application, tokens["refresh_token"], proof(key))

    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"
    assert response.json()["refresh_token"] != tokens["refresh_token"]
    assert family_of(response.json()["refresh_token"]).dpop_jkt == jkt(key)


def test_rfc9449_5_refresh_without_rotation_keeps_the_access_token_bound(
    browser, api, native_application, key, dot_settings
):
    """With ROTATE_REFRESH_TOKEN off DOT renews the access token in place instead of minting
    one: the renewed token must still be bound to the key (a stolen copy is useless as Bearer)."""
    dot_settings(ROTATE_REFRESH_TOKEN=False)
    tokens = bound_tokens(browser, api, native_application, key)

    response = refresh(api, native_application, tokens["refresh_token"], proof(key))

    assert response.status_code == 200, response.content
    renewed = response.json()
    assert renewed["token_type"] == "DPoP"
    assert renewed["refresh_token"] == tokens["refresh_token"]  # not rotated
    assert userinfo(api, renewed["access_token"], scheme="Bearer").status_code == 401
    bound = userinfo(api, renewed["access_token"], dpop=resource_proof(key, renewed["access_token"]))
    assert bound.status_code == 200, bound.content


def test_rfc9449_5_bound_refresh_with_another_key_is_invalid_grant(browser, api, native_application, key):
    tokens = bound_tokens(browser, api, native_application, key)

    response = refresh(api, native_application, tokens["refresh_token"], proof(new_key()))

    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.content
    # The token is still the holder's: the thief's attempt did not use it up.
    assert refresh(api, native_application, tokens["refresh_token"], proof(key)).status_code == 200


def test_rfc9449_5_bound_refresh_without_a_proof_is_invalid_grant(browser, api, native_application, key):
    """The attack: a refresh token copied from a phone backup, used without the device's key."""
    tokens = bound_tokens(browser, api, native_application, key)

    response = refresh(api, native_application, tokens["refresh_token"])

    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.content


def test_confidential_client_refresh_tokens_are_not_bound(browser, api, application, key):
    """RFC 9449 5: a confidential client's refresh token is bound by its client authentication."""
    tokens = bound_tokens(browser, api, application, key)
    assert tokens["token_type"] == "DPoP"
    assert family_of(tokens["refresh_token"]).dpop_jkt == ""

    other = new_key()
    response = refresh(api, application, tokens["refresh_token"], proof(other))

    assert response.status_code == 200, response.content
    new_access = response.json()["access_token"]
    access = get_access_token_model().objects.get(token_checksum=stored_checksum(new_access))
    assert DPoPBoundAccessToken.objects.get(token_checksum=access.token_checksum).jkt == jkt(other)


def test_public_client_family_from_before_dpop_is_bound_at_its_first_proof(
    browser, api, native_application, key
):
    code = get_code(browser, native_application, prompt="consent")
    tokens = exchange(api, native_application, code).json()

    upgraded = refresh(api, native_application, tokens["refresh_token"], proof(key))
    assert upgraded.status_code == 200, upgraded.content
    assert family_of(tokens["refresh_token"]).dpop_jkt == jkt(key)

    response = refresh(api, native_application, upgraded.json()["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def approved_device_poll(browser, api, cli) -> dict:
    """The body of the device's next poll, once the user has approved its code."""
    started = start(api, cli)
    approve(browser, started)
    waited(started["device_code"])
    return {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": started["device_code"],
        "client_id": cli.client_id,
    }


def test_rfc9449_5_device_poll_with_proof_binds_the_family(browser, api, cli, key):
    data = approved_device_poll(browser, api, cli)

    response = post_token(api, data, proof(key))

    assert response.status_code == 200, response.content
    tokens = response.json()
    assert tokens["token_type"] == "DPoP"
    assert family_of(tokens["refresh_token"]).dpop_jkt == jkt(key)
    stolen = refresh(api, cli, tokens["refresh_token"], proof(new_key()))
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert refresh(api, cli, tokens["refresh_token"], proof(key)).status_code == 200


def test_device_poll_with_a_bad_proof_redeems_nothing(browser, api, cli, key):
    data = approved_device_poll(browser, api, cli)

    assert_dpop_error(post_token(api, data, proof(key, htm="GET")))
    assert post_token(api, data, proof(key)).status_code == 200


# The grace period (RFC 6749 6 retry; DOT's REFRESH_TOKEN_GRACE_PERIOD_SECONDS, 30 s here) -----------


def test_grace_period_retry_with_the_same_key_gets_the_same_pair(browser, api, native_application, key):
    tokens = bound_tokens(browser, api, native_application, key)
    first = refresh(api, native_application, tokens["refresh_token"], proof(key))
    assert first.status_code == 200, first.content

    retry = refresh(api, native_application, tokens["refresh_token"], proof(key))

    assert retry.status_code == 200, retry.content
    assert retry.json()["access_token"] == first.json()["access_token"]
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert retry.json()["token_type"] == "DPoP"


@pytest.mark.parametrize("retry_key", ["another", "none"])
def test_grace_period_retry_needs_the_same_key(browser, api, native_application, key, retry_key):
    tokens = bound_tokens(browser, api, native_application, key)
    assert refresh(api, native_application, tokens["refresh_token"], proof(key)).status_code == 200

    retry = refresh(
        api, native_application, tokens["refresh_token"], proof(new_key()) if retry_key == "another" else None
    )

    assert retry.status_code == 400 and retry.json()["error"] == "invalid_grant", retry.content


@pytest.mark.parametrize("retry_key", ["another", "none"])
def test_grace_period_retry_of_a_confidential_client_needs_the_first_key(
    browser, api, application, key, retry_key
):
    """Its family is not bound, but the pair handed back holds an access token bound to the first key."""
    tokens = bound_tokens(browser, api, application, key)
    assert refresh(api, application, tokens["refresh_token"], proof(key)).status_code == 200

    retry = refresh(
        api, application, tokens["refresh_token"], proof(new_key()) if retry_key == "another" else None
    )

    assert retry.status_code == 400 and retry.json()["error"] == "invalid_grant", retry.content


def test_grace_period_retry_of_a_bearer_refresh_with_a_proof_is_refused(browser, api, application, key):
    code = get_code(browser, application, prompt="consent")
    tokens = exchange(api, application, code).json()
    assert refresh(api, application, tokens["refresh_token"]).status_code == 200

    retry = refresh(api, application, tokens["refresh_token"], proof(key))

    assert retry.status_code == 400 and retry.json()["error"] == "invalid_grant"


# dpop_jkt (RFC 9449 10) ------------------------------------------------------------------------------


def test_rfc9449_10_dpop_jkt_code_needs_that_key(browser, api, native_application, key):
    code = get_code(browser, native_application, prompt="consent", dpop_jkt=jkt(key))
    assert GrantAuthentication.objects.filter(dpop_jkt=jkt(key)).count() == 1

    other = exchange(api, native_application, code, proof(new_key()))
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant", other.content
    without = exchange(api, native_application, code)
    assert without.status_code == 400 and without.json()["error"] == "invalid_grant", without.content

    response = exchange(api, native_application, code, proof(key))
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"


def test_rfc9449_10_dpop_jkt_binds_a_confidential_clients_code_too(browser, api, application, key):
    code = get_code(browser, application, prompt="consent", dpop_jkt=jkt(key))

    assert exchange(api, application, code).json()["error"] == "invalid_grant"
    assert exchange(api, application, code, proof(key)).status_code == 200


def test_rfc9449_10_dpop_jkt_survives_the_consent_form(browser, native_application, key):
    """The consent screen's POST builds the code from the signed request, dpop_jkt included (SPEC P3)."""
    url = authorize_url(native_application, prompt="consent", dpop_jkt=jkt(key))
    screen = browser.get(url)
    assert screen.status_code == 200
    from .oauth import submit_consent

    redirect_params(submit_consent(browser, url, screen))

    assert GrantAuthentication.objects.get().dpop_jkt == jkt(key)


@pytest.mark.parametrize("value", ["short", "x" * 43 + "=", "a" * 44])
def test_rfc9449_10_malformed_dpop_jkt_is_invalid_request(browser, native_application, value):
    response = browser.get(authorize_url(native_application, prompt="consent", dpop_jkt=value))

    assert redirect_params(response)["error"] == "invalid_request"


def test_rfc9449_10_repeated_dpop_jkt_is_invalid_request(browser, native_application, key):
    url = (
        authorize_url(native_application, prompt="consent", dpop_jkt=jkt(key)) + "&dpop_jkt=" + jkt(new_key())
    )

    assert redirect_params(browser.get(url))["error"] == "invalid_request"


# Nonces (RFC 9449 8) -------------------------------------------------------------------------------


@pytest.fixture
def nonces(settings):
    settings.OFFLINE_ACCESS = {**getattr(settings, "OFFLINE_ACCESS", {}), "DPOP_NONCE_REQUIRED": True}


def test_rfc9449_8_nonce_flow(api, native_application, code, key, nonces):
    first = exchange(api, native_application, code, proof(key))
    assert_dpop_error(first, "use_dpop_nonce")
    nonce = first["DPoP-Nonce"]

    response = exchange(api, native_application, code, proof(key, claims={"nonce": nonce}))

    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"
    assert response["DPoP-Nonce"]  # a fresh one for the next request


@pytest.mark.parametrize("nonce", ["made-up", 12, None])
def test_rfc9449_8_forged_nonce_is_refused(api, native_application, code, key, nonces, nonce):
    response = exchange(api, native_application, code, proof(key, claims={"nonce": nonce}))

    assert_dpop_error(response, "use_dpop_nonce")
    assert response["DPoP-Nonce"]


def test_rfc9449_8_expired_nonce_is_refused(api, native_application, code, key, settings):
    settings.OFFLINE_ACCESS = {"DPOP_NONCE_REQUIRED": True, "DPOP_NONCE_MAX_AGE": 1}
    nonce = dpop_module.new_nonce()
    time.sleep(2.1)

    assert_dpop_error(
        exchange(api, native_application, code, proof(key, claims={"nonce": nonce})), "use_dpop_nonce"
    )


def test_rfc9449_8_a_bad_proof_with_a_good_nonce_is_still_invalid(api, native_application, code, key, nonces):
    nonce = dpop_module.new_nonce()

    assert_dpop_error(exchange(api, native_application, code, proof(key, htm="GET", claims={"nonce": nonce})))


def test_nonces_off_ignore_a_nonce_claim(api, native_application, code, key):
    response = exchange(api, native_application, code, proof(key, claims={"nonce": "anything"}))

    assert response.status_code == 200
    assert not response.has_header("DPoP-Nonce")


# Policy --------------------------------------------------------------------------------------------


def test_client_policy_require_dpop_refuses_requests_without_proof(browser, api, application, key):
    ClientPolicy.objects.create(application=application, require_dpop=True)
    code = get_code(browser, application, prompt="consent")

    assert_dpop_error(exchange(api, application, code))
    tokens = exchange(api, application, code, proof(key)).json()
    assert tokens["token_type"] == "DPoP"
    assert_dpop_error(refresh(api, application, tokens["refresh_token"]))
    assert refresh(api, application, tokens["refresh_token"], proof(new_key())).status_code == 200


def test_client_policy_require_dpop_on_device_poll(browser, api, cli, key):
    ClientPolicy.objects.create(application=cli, require_dpop=True)
    data = approved_device_poll(browser, api, cli)

    assert_dpop_error(form_post(api, "/o/token/", data))
    assert post_token(api, data, proof(key)).status_code == 200


def test_dpop_required_for_public_clients_setting(browser, api, native_application, application, settings):
    settings.OFFLINE_ACCESS = {"DPOP_REQUIRED_FOR_PUBLIC_CLIENTS": True}

    public_code = get_code(browser, native_application, prompt="consent")
    assert_dpop_error(exchange(api, native_application, public_code))
    confidential_code = get_code(browser, application, prompt="consent")
    assert exchange(api, application, confidential_code).json()["token_type"] == "Bearer"


@pytest.mark.parametrize(
    ("client_requires", "public", "setting", "expected"),
    [
        (False, False, False, False),
        (False, True, False, False),
        (False, True, True, True),
        (False, False, True, False),
        (True, False, False, True),
        (True, True, False, True),
    ],
)
def test_policy_dpop_required(client_requires, public, setting, expected):
    assert (
        policy.dpop_required(
            client_requires_dpop=client_requires, client_is_public=public, required_for_public_clients=setting
        )
        is expected
    )


@pytest.mark.parametrize(
    ("bound", "presented", "required", "expected"),
    [
        ("", None, False, None),
        ("", "k1", False, None),
        ("", None, True, policy.DPoPRefusal.PROOF_REQUIRED),
        ("k1", None, False, policy.DPoPRefusal.BOUND_WITHOUT_PROOF),
        ("k1", None, True, policy.DPoPRefusal.BOUND_WITHOUT_PROOF),
        ("k1", "k2", False, policy.DPoPRefusal.OTHER_KEY),
        ("k1", "k1", True, None),
    ],
)
def test_policy_dpop_refusal(bound, presented, required, expected):
    assert policy.dpop_refusal(bound_jkt=bound, proof_jkt=presented, proof_required=required) == expected


def test_policy_binds_refresh_tokens_of_public_clients_only():
    assert policy.binds_refresh_token(client_is_public=True) is True
    assert policy.binds_refresh_token(client_is_public=False) is False


# Resource access (RFC 9449 7) ------------------------------------------------------------------------


def test_rfc9449_7_userinfo_with_a_bound_token_and_proof(browser, api, native_application, key):
    tokens = bound_tokens(browser, api, native_application, key)

    response = userinfo(api, tokens["access_token"], dpop=resource_proof(key, tokens["access_token"]))

    assert response.status_code == 200, response.content
    assert response.json()["sub"]


def test_rfc9449_7_2_bound_token_sent_as_bearer_is_refused(browser, api, native_application, key):
    tokens = bound_tokens(browser, api, native_application, key)

    response = userinfo(api, tokens["access_token"], scheme="Bearer")

    assert response.status_code == 401
    assert "DPoP" in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    "make_proof",
    [
        lambda key, token: None,
        lambda key, token: resource_proof(new_key(), token),
        lambda key, token: resource_proof(key, "another-token"),
        lambda key, token: resource_proof(key, token, omit=("ath",)),
        lambda key, token: resource_proof(key, token, htm="POST"),
        lambda key, token: resource_proof(key, token, htu="http://testserver/o/token/"),
        lambda key, token: "garbage",
    ],
    ids=["no proof", "another key", "wrong ath", "no ath", "wrong htm", "wrong htu", "garbage"],
)
def test_rfc9449_7_userinfo_refuses_bad_proofs(browser, api, native_application, key, make_proof):
    tokens = bound_tokens(browser, api, native_application, key)

    response = userinfo(api, tokens["access_token"], dpop=make_proof(key, tokens["access_token"]))

    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("DPoP ")


def test_rfc9449_7_userinfo_proof_replay_is_refused(browser, api, native_application, key):
    tokens = bound_tokens(browser, api, native_application, key)
    once = resource_proof(key, tokens["access_token"])

    assert userinfo(api, tokens["access_token"], dpop=once).status_code == 200
    assert userinfo(api, tokens["access_token"], dpop=once).status_code == 401


def test_unbound_token_with_dpop_scheme_is_refused_and_as_bearer_works(browser, api, native_application, key):
    code = get_code(browser, native_application, prompt="consent")
    token = exchange(api, native_application, code).json()["access_token"]

    assert userinfo(api, token, dpop=resource_proof(key, token)).status_code == 401
    assert userinfo(api, token, scheme="Bearer").status_code == 200


def test_drf_dpop_authentication_on_the_api(browser, api, native_application, key):
    from offline_access.dpop import DPoPAuthentication

    assert DPoPAuthentication.__module__ == "offline_access.api.authentication"
    tokens = bound_tokens(browser, api, native_application, key, scope="openid offline_access connected_apps")
    path = "/api/offline-access/me/devices/"
    url = "http://testserver" + path

    as_bearer = api.get(path, HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    as_dpop = api.get(
        path,
        HTTP_AUTHORIZATION=f"DPoP {tokens['access_token']}",
        HTTP_DPOP=resource_proof(key, tokens["access_token"], htu=url),
    )

    assert as_bearer.status_code == 401
    assert as_dpop.status_code == 200, as_dpop.content


# Never a 500 (fuzzing) ---------------------------------------------------------------------------------


_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=300
)
_jwt_like = st.builds(
    lambda a, b, c: f"{a}.{b}.{c}",
    st.text(alphabet="ABCDEFGHabcdefgh0123456789-_", max_size=80),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789-_", max_size=80),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789-_", max_size=40),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_header_text | _jwt_like)
def test_garbage_dpop_header_is_never_a_500(db, value):
    response = post_token(
        Client(), {"grant_type": "refresh_token", "refresh_token": "x", "client_id": "nobody"}, value
    )

    assert response.status_code in (400, 401), response.status_code
    if "DPoP" in value or value.strip():
        assert response.json()["error"] in (
            "invalid_dpop_proof",
            "invalid_client",
            "invalid_grant",
            "invalid_request",
        )


@hypothesis_settings(max_examples=300, deadline=None)
@given(header=_json_values, payload=_json_values, signature=st.binary(max_size=70))
def test_any_json_in_a_proof_raises_only_dpop_error(header, payload, signature):
    value = unsigned(header, payload, signature)
    try:
        dpop_module.validate_proof(value, method="POST", url=TOKEN_URL, remember=False)
    except dpop_module.DPoPError:
        pass
    else:  # pragma: no cover -- an unsigned proof can never pass
        raise AssertionError("accepted an unsigned proof")


@hypothesis_settings(max_examples=100, deadline=None)
@given(
    members=st.dictionaries(
        st.sampled_from(["kty", "crv", "x", "y", "n", "e", "alg", "use", "key_ops", "kid"]),
        _json_values,
        max_size=6,
    )
)
def test_any_jwk_header_raises_only_dpop_error(members):
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": members}
    value = unsigned(
        header, {"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time())}, b"s" * 64
    )
    try:
        dpop_module.validate_proof(value, method="POST", url=TOKEN_URL, remember=False)
    except dpop_module.DPoPError:
        pass


# Discovery, checks ----------------------------------------------------------------------------------


def test_rfc9449_5_1_discovery_lists_the_proof_algorithms(api, db):
    openid = api.get("/o/.well-known/openid-configuration").json()

    assert openid["dpop_signing_alg_values_supported"] == list(dpop_module.DEFAULT_SIGNING_ALGS)
    assert not {"none", "HS256", "HS384", "HS512"} & set(openid["dpop_signing_alg_values_supported"])


def test_configured_algorithms_are_enforced_and_advertised(api, native_application, code, key, settings):
    settings.OFFLINE_ACCESS = {"DPOP_SIGNING_ALGS": ["EdDSA"]}

    assert api.get("/o/.well-known/openid-configuration").json()["dpop_signing_alg_values_supported"] == [
        "EdDSA"
    ]
    assert_dpop_error(exchange(api, native_application, code, proof(key)))
    assert exchange(api, native_application, code, proof(new_key("OKP", crv="Ed25519"))).status_code == 200


def test_symmetric_algorithms_listed_in_settings_are_never_accepted(settings):
    settings.OFFLINE_ACCESS = {"DPOP_SIGNING_ALGS": ["HS256", "none", "ES256"]}

    assert dpop_module.signing_algs() == ["ES256"]
    assert [error.id for error in check_settings(None)] == ["offline_access.E003"]


@pytest.mark.parametrize(
    ("backend", "warns"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", True),
        ("django.core.cache.backends.dummy.DummyCache", True),
        ("django.core.cache.backends.redis.RedisCache", False),
        ("django.core.cache.backends.db.DatabaseCache", False),
    ],
)
def test_w004_replay_cache_per_process(settings, backend, warns):
    settings.CACHES = {**settings.CACHES, "dpop": {"BACKEND": backend, "LOCATION": "somewhere"}}
    settings.OFFLINE_ACCESS = {"DPOP_REPLAY_CACHE": "dpop"}

    warnings = check_dpop_replay_cache(None)

    assert [warning.id for warning in warnings] == (["offline_access.W004"] if warns else [])


def test_w004_is_registered_as_a_deploy_check(settings, capsys):
    settings.OFFLINE_ACCESS = {}
    with pytest.raises(Exception) as raised:  # noqa: PT011 -- --fail-level WARNING raises SystemCheckError
        call_command("check", "--deploy", "--fail-level", "WARNING")
    assert "offline_access.W004" in str(raised.value)


def test_unknown_replay_cache_alias_is_e003(settings):
    settings.OFFLINE_ACCESS = {"DPOP_REPLAY_CACHE": "nope"}

    assert [error.id for error in check_settings(None)] == ["offline_access.E003"]


# Replay protection across workers (RFC 9449 11.1) -------------------------------------------------


def test_rfc9449_11_1_one_of_many_workers_sharing_redis_accepts_a_proof(settings):
    """Each thread has its own RedisCache connection (Django's caches are per thread), as workers do."""
    require_redis()
    settings.CACHES = {
        **settings.CACHES,
        "dpop-redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"test-dpop-{uuid.uuid4()}",
        },
    }
    settings.OFFLINE_ACCESS = {"DPOP_REPLAY_CACHE": "dpop-redis"}
    assert check_dpop_replay_cache(None) == []
    value = proof(new_key())
    workers = 8
    barrier = threading.Barrier(workers)

    def worker(_):
        barrier.wait()
        try:
            dpop_module.validate_proof(value, method="POST", url=TOKEN_URL)
        except dpop_module.DPoPError as error:
            return error.description
        return "accepted"

    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(worker, range(workers)))

    assert answers.count("accepted") == 1, answers
    assert all("jti" in answer for answer in answers if answer != "accepted")


# Admin -------------------------------------------------------------------------------------------


def test_admin_edits_require_dpop_and_the_exchange_follows(admin_client, browser, api, application, key):
    from django.urls import reverse

    add = admin_client.post(
        reverse("admin:offline_access_clientpolicy_add"),
        {"application": application.pk, "allow_offline_access": "on", "require_dpop": "on"},
    )
    assert add.status_code == 302, add.content[:2000]
    assert ClientPolicy.objects.get(application=application).require_dpop is True
    changelist = reverse("admin:offline_access_clientpolicy_changelist")
    assert admin_client.get(changelist + "?require_dpop__exact=1").status_code == 200

    code = get_code(browser, application, prompt="consent")
    assert_dpop_error(exchange(api, application, code))


# Introspection (RFC 9449 6.2) -----------------------------------------------------------------------


def test_rfc9449_6_2_introspection_names_the_key_of_a_bound_token(browser, api, application, key):
    from .test_introspection import introspect_as_owner

    bound = bound_tokens(browser, api, application, key)
    code = get_code(browser, application, prompt="consent")
    bearer = exchange(api, application, code).json()

    answer = introspect_as_owner(api, application, bound["access_token"])
    assert answer["active"] is True
    assert answer["token_type"] == "DPoP"
    assert answer["cnf"] == {"jkt": jkt(key)}
    plain = introspect_as_owner(api, application, bearer["access_token"])
    assert plain["active"] is True and "cnf" not in plain


# Expired bindings: swept by maintenance, never by a token request ---------------------------------


def _binding(number: int, *, expired: bool) -> DPoPBoundAccessToken:
    from datetime import timedelta

    from django.utils import timezone

    moment = timezone.now() + (timedelta(minutes=-1) if expired else timedelta(minutes=10))
    return DPoPBoundAccessToken.objects.create(
        token_checksum=f"{number:064x}", jkt="k" * 43, expires_at=moment
    )


def test_delete_expired_bindings_deletes_in_batches_by_primary_key(db, django_assert_num_queries):
    expired = [_binding(number, expired=True) for number in range(5)]
    live = [_binding(number, expired=False) for number in range(5, 7)]

    # Batches of 2, 2 and 1: a SELECT of ids and a DELETE of those ids each; the short
    # last batch ends the run without another SELECT.
    with django_assert_num_queries(6):
        assert dpop_module.delete_expired_bindings(batch_size=2) == len(expired)

    assert sorted(DPoPBoundAccessToken.objects.values_list("pk", flat=True)) == [row.pk for row in live]
    with django_assert_num_queries(1):
        assert dpop_module.delete_expired_bindings() == 0


def test_delete_expired_bindings_refuses_an_empty_batch(db):
    with pytest.raises(ValueError):
        dpop_module.delete_expired_bindings(batch_size=0)


def test_a_dpop_token_request_leaves_expired_bindings_to_maintenance(browser, api, native_application, key):
    stale = _binding(0, expired=True)

    tokens = bound_tokens(browser, api, native_application, key)
    assert refresh(api, native_application, tokens["refresh_token"], proof(key)).status_code == 200

    assert DPoPBoundAccessToken.objects.filter(pk=stale.pk).exists()
    assert DPoPBoundAccessToken.objects.count() == 3  # the stale row and one per issued access token


def test_an_expired_bound_access_token_is_refused_while_its_binding_remains(
    browser, api, native_application, key
):
    """Nothing relies on the sweep: a binding is read only with a live token, and only restricts."""
    from datetime import timedelta

    from django.utils import timezone

    tokens = bound_tokens(browser, api, native_application, key)
    access = get_access_token_model().objects.get(token_checksum=stored_checksum(tokens["access_token"]))
    past = timezone.now() - timedelta(seconds=1)
    get_access_token_model().objects.filter(pk=access.pk).update(expires=past)
    DPoPBoundAccessToken.objects.filter(token_checksum=access.token_checksum).update(expires_at=past)

    response = userinfo(api, tokens["access_token"], dpop=resource_proof(key, tokens["access_token"]))
    assert response.status_code == 401, response.content
    assert userinfo(api, tokens["access_token"], scheme="Bearer").status_code == 401
    # The binding is still read with the token, and the token is still expired.
    from offline_access.validators import find_access_token

    found = find_access_token(tokens["access_token"])
    assert found.offline_access_dpop_jkt == jkt(key)
    assert not found.is_valid()
