"""Tokens at rest (issue 9): a copy of the database alone yields no usable credential.

Every access token, refresh token, authorization code and device code is
stored as a keyed hash (offline_access.token_storage); a refresh retried within
the grace period still gets the pair it already got, from a blob sealed under
the predecessor token that a database copy cannot open.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
from datetime import timedelta
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from oauth2_provider import models as dot_models
from oauth2_provider import utils as dot_utils
from oauth2_provider.models import (
    get_access_token_model,
    get_device_grant_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.views import IntrospectTokenView, TokenView
from oauth2_provider.views.device import (
    DeviceAuthorizationView,
    DeviceGrantForm,
    DeviceGrantStatusView,
    DeviceUserCodeView,
)

from offline_access import token_storage
from offline_access.device import normalise_user_code
from offline_access.models import SealedSuccessorPair

from .oauth import client_auth, exchange_code, get_code, refresh, stored

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()
DeviceGrant = get_device_grant_model()
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def userinfo(api: Client, access_token: str):
    return api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")


def introspect(api: Client, application, token: str) -> dict:
    response = api.post("/o/introspect/", {"token": token, **client_auth(application)})
    assert response.status_code == 200, response.content
    return response.json()


def start_device(api: Client, cli) -> dict:
    response = api.post(
        "/o/device-authorization/",
        urlencode({"client_id": cli.client_id, "scope": "openid offline_access"}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.content
    return response.json()


def poll(api: Client, cli, device_code: str):
    DeviceGrant.objects.update(last_checked=timezone.now() - timedelta(seconds=60))
    return api.post(
        "/o/token/",
        urlencode({"grant_type": DEVICE_CODE_GRANT, "device_code": device_code, "client_id": cli.client_id}),
        content_type="application/x-www-form-urlencoded",
    )


def database_copy() -> set[str]:
    """Every stored value of every DOT token table, and the sealed pairs, as an attacker would try them."""
    values: set[str] = set()
    for model in (AccessToken, RefreshToken):
        for token, checksum in model.objects.values_list("token", "token_checksum"):
            values |= {token, checksum, token.removeprefix(token_storage.PREFIX)}
    for code in Grant.objects.values_list("code", flat=True):
        values |= {code, code.removeprefix(token_storage.PREFIX)}
    for device_code, user_code in DeviceGrant.objects.values_list("device_code", "user_code"):
        values |= {device_code, device_code.removeprefix(token_storage.PREFIX), user_code}
    for sealed in SealedSuccessorPair.objects.values_list("sealed", flat=True):
        values |= {bytes(sealed).hex(), base64.b64encode(bytes(sealed)).decode()}
    values.discard("")
    return values


def test_a_database_copy_yields_no_usable_credential(browser, api, application, cli):
    # Real credentials of every kind: a rotated pair (with its sealed twin), a code
    # not yet exchanged, a device code waiting for the user.
    first = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    rotated = refresh(api, application, first["refresh_token"]).json()
    assert "refresh_token" in rotated, rotated
    pending_code = get_code(browser, application, prompt="consent")
    device = start_device(api, cli)
    assert SealedSuccessorPair.objects.exists()

    copied = database_copy()
    assert len(copied) >= 9

    for value in copied:
        api.post("/o/revoke_token/", {"token": value, **client_auth(application)})  # revokes nothing
        assert refresh(api, application, value).status_code == 400, value
        assert exchange_code(api, application, value).status_code == 400, value
        assert poll(api, cli, value).json()["error"] == "invalid_grant", value
        assert userinfo(api, value).status_code == 401, value
        assert introspect(api, application, value) == {"active": False}, value

    # The user code, copied, cannot be entered on the verification page (RFC 8628 3.3).
    for user_code in DeviceGrant.objects.values_list("user_code", flat=True):
        assert browser.post("/o/device/", {"user_code": user_code}).status_code != 302
    assert DeviceGrant.objects.get().user is None

    # The real tokens keep working.
    assert userinfo(api, rotated["access_token"]).status_code == 200
    assert introspect(api, application, rotated["access_token"])["active"] is True
    assert poll(api, cli, device["device_code"]).json()["error"] == "authorization_pending"
    assert exchange_code(api, application, pending_code).status_code == 200
    assert refresh(api, application, rotated["refresh_token"]).status_code == 200
    assert browser.post("/o/device/", {"user_code": device["user_code"]}).status_code == 302


def test_no_plaintext_credential_is_stored(browser, api, application, cli):
    tokens = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    code = get_code(browser, application, prompt="consent")
    device = start_device(api, cli)

    assert AccessToken.objects.get().token == stored(tokens["access_token"])
    assert RefreshToken.objects.get().token == stored(tokens["refresh_token"])
    assert Grant.objects.get().code == stored(code)
    assert DeviceGrant.objects.get().device_code == stored(device["device_code"])
    assert DeviceGrant.objects.get().user_code == stored(normalise_user_code(device["user_code"]))
    assert token_storage.is_hashed(stored(code)) and len(stored(code)) == len("h1$") + 64


# The grace period -----------------------------------------------------------------------------


def test_a_retry_within_the_grace_period_gets_the_same_pair(browser, api, application):
    first = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    rotated = refresh(api, application, first["refresh_token"])
    retried = refresh(api, application, first["refresh_token"])

    assert rotated.status_code == retried.status_code == 200, retried.content
    pair = {key: rotated.json()[key] for key in ("access_token", "refresh_token")}
    assert {key: retried.json()[key] for key in ("access_token", "refresh_token")} == pair
    assert userinfo(api, pair["access_token"]).status_code == 200
    assert refresh(api, application, pair["refresh_token"]).status_code == 200


def test_the_sealed_pair_opens_only_with_the_predecessor(browser, api, application):
    first = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    rotated = refresh(api, application, first["refresh_token"]).json()
    row = SealedSuccessorPair.objects.get()

    opened = token_storage.open_pair(first["refresh_token"], row.predecessor_id, row.sealed)
    assert opened == {"access_token": rotated["access_token"], "refresh_token": rotated["refresh_token"]}
    for value in database_copy():
        assert token_storage.open_pair(value, row.predecessor_id, row.sealed) is None
    # Bound to its row: moved onto another refresh token it does not open.
    assert token_storage.open_pair(first["refresh_token"], row.predecessor_id + 1, row.sealed) is None
    assert rotated["access_token"].encode() not in bytes(row.sealed)


def test_a_retry_whose_sealed_pair_is_gone_gets_invalid_grant_not_a_fresh_pair(browser, api, application):
    first = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    refresh(api, application, first["refresh_token"])
    SealedSuccessorPair.objects.all().delete()

    response = refresh(api, application, first["refresh_token"])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert AccessToken.objects.count() == 1


# Keys -----------------------------------------------------------------------------------------


def test_a_rotated_key_keeps_earlier_tokens_working_and_hashes_new_ones(settings, browser, api, application):
    tokens = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()

    settings.OFFLINE_ACCESS = {
        **settings.OFFLINE_ACCESS,
        "TOKEN_HASH_KEYS": ["a-new-key", settings.SECRET_KEY],
    }
    assert userinfo(api, tokens["access_token"]).status_code == 200
    rotated = refresh(api, application, tokens["refresh_token"]).json()
    assert RefreshToken.objects.filter(
        token=token_storage.PREFIX + token_storage.digest(rotated["refresh_token"], "a-new-key")
    ).exists()

    settings.OFFLINE_ACCESS = {**settings.OFFLINE_ACCESS, "TOKEN_HASH_KEYS": ["a-new-key"]}
    assert userinfo(api, rotated["access_token"]).status_code == 200
    settings.OFFLINE_ACCESS = {**settings.OFFLINE_ACCESS, "TOKEN_HASH_KEYS": ["another-key"]}
    assert userinfo(api, rotated["access_token"]).status_code == 401


# Converting existing rows ---------------------------------------------------------------------


def as_plaintext_rows(tokens: dict, code: str, device_code: str, user_code: str) -> None:
    """Turn the stored rows back into what DOT wrote before this app hashed them."""
    for model, value in ((AccessToken, tokens["access_token"]), (RefreshToken, tokens["refresh_token"])):
        model.objects.filter(token=stored(value)).update(
            token=value, token_checksum=hashlib.sha256(value.encode()).hexdigest()
        )
    Grant.objects.filter(code=stored(code)).update(code=code)
    DeviceGrant.objects.filter(device_code=stored(device_code)).update(
        device_code=device_code,
        user_code=normalise_user_code(user_code),  # DOT's code, ungrouped
    )


def run_conversion(*args: str) -> str:
    out = StringIO()
    call_command("hash_stored_tokens", *args, stdout=out)
    return out.getvalue()


def test_hash_stored_tokens_converts_plaintext_rows_in_batches_and_they_keep_working(
    browser, api, application, cli
):
    tokens = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    code = get_code(browser, application, prompt="consent")
    device = start_device(api, cli)
    as_plaintext_rows(tokens, code, device["device_code"], device["user_code"])
    assert userinfo(api, tokens["access_token"]).status_code == 200  # not converted yet: still works

    assert "Would convert 1 access tokens." in run_conversion("--dry-run")
    assert AccessToken.objects.get().token == tokens["access_token"]
    output = run_conversion("--batch-size", "1")

    assert "Converted 1 access tokens." in output and "Converted 1 device codes." in output
    assert AccessToken.objects.get().token == stored(tokens["access_token"])
    assert RefreshToken.objects.get().token == stored(tokens["refresh_token"])
    assert Grant.objects.get().code == stored(code)
    assert DeviceGrant.objects.get().device_code == stored(device["device_code"])
    assert DeviceGrant.objects.get().user_code == stored(normalise_user_code(device["user_code"]))
    assert "Converted 0 access tokens." in run_conversion()  # idempotent
    assert userinfo(api, tokens["access_token"]).status_code == 200
    assert poll(api, cli, device["device_code"]).json()["error"] == "authorization_pending"
    assert exchange_code(api, application, code).status_code == 200
    assert refresh(api, application, tokens["refresh_token"]).status_code == 200


def test_hash_stored_tokens_deletes_sealed_pairs_past_the_grace_period(browser, api, application):
    first = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    refresh(api, application, first["refresh_token"])
    assert "Deleted 0 sealed" in run_conversion()
    SealedSuccessorPair.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    assert "Deleted 1 sealed" in run_conversion()


# DOT under the overrides ----------------------------------------------------------------------

#: SHA-256 of the source of each DOT function whose token lookup or storage the app replaces
#: (offline_access.validators, .device, .views). When DOT changes one, this fails: re-read it
#: and carry the change into the override before updating the hash.
DOT_SOURCES = {
    "OAuth2Validator.validate_refresh_token": OAuth2Validator.validate_refresh_token,
    "OAuth2Validator._load_access_token": OAuth2Validator._load_access_token,
    "OAuth2Validator.revoke_token": OAuth2Validator.revoke_token,
    "OAuth2Validator._save_bearer_token": OAuth2Validator._save_bearer_token,
    "OAuth2Validator._set_token_value": OAuth2Validator._set_token_value,
    "OAuth2Validator._create_authorization_code": OAuth2Validator._create_authorization_code,
    "OAuth2Validator.get_authorization_code_scopes": OAuth2Validator.get_authorization_code_scopes,
    # Issue 12: the code exchange reads the code once (validate_code's row serves the
    # redirect URI, PKCE and nonce checks), and the access token links the ID token the
    # request saved (finalize_id_token) without DOT's _create_access_token reading it back.
    "OAuth2Validator.validate_code": OAuth2Validator.validate_code,
    "OAuth2Validator.confirm_redirect_uri": OAuth2Validator.confirm_redirect_uri,
    "OAuth2Validator.get_code_challenge": OAuth2Validator.get_code_challenge,
    "OAuth2Validator.get_code_challenge_method": OAuth2Validator.get_code_challenge_method,
    "OAuth2Validator.get_authorization_code_nonce": OAuth2Validator.get_authorization_code_nonce,
    "OAuth2Validator.finalize_id_token": OAuth2Validator.finalize_id_token,
    "OAuth2Validator._create_access_token": OAuth2Validator._create_access_token,
    "TokenView.authorization_flow_token_response": TokenView.authorization_flow_token_response,
    "IntrospectTokenView.get_token_response": IntrospectTokenView.get_token_response,
    "DeviceAuthorizationView.post": DeviceAuthorizationView.post,
    "DeviceGrantForm.clean_user_code": DeviceGrantForm.clean_user_code,
    "DeviceGrantStatusView.get_object": DeviceGrantStatusView.get_object,
    "DeviceUserCodeView.get_success_url": DeviceUserCodeView.get_success_url,
    "TokenChecksumField.pre_save": dot_models.TokenChecksumField.pre_save,
    "set_oauthlib_user_to_device_request_user": dot_utils.set_oauthlib_user_to_device_request_user,
}
DOT_SOURCE_HASHES = {  # django-oauth-toolkit 3.4.1
    "DeviceAuthorizationView.post": "1ffeb7d543a4a57f",
    "DeviceGrantForm.clean_user_code": "4ee1cbe10bfbd6ac",
    "DeviceGrantStatusView.get_object": "3193addb2bab7e6d",
    "DeviceUserCodeView.get_success_url": "898f39243704d861",
    "IntrospectTokenView.get_token_response": "48b671db1fdc44c9",
    "OAuth2Validator._create_access_token": "b9b36b168ac8ba46",
    "OAuth2Validator._create_authorization_code": "6aa66b1d03974f3e",
    "OAuth2Validator.confirm_redirect_uri": "96af690d40013206",
    "OAuth2Validator.finalize_id_token": "fda062f4b8116e47",
    "OAuth2Validator.get_authorization_code_nonce": "d3b7e7749e0175e6",
    "OAuth2Validator.get_code_challenge": "1dfc26e1ae3c9227",
    "OAuth2Validator.get_code_challenge_method": "a7b09d76e43c2e32",
    "OAuth2Validator._load_access_token": "713babbd1c31b6d4",
    "OAuth2Validator._save_bearer_token": "bbf80b89d0b56459",
    "OAuth2Validator._set_token_value": "fb56a30214da8e1d",
    "OAuth2Validator.get_authorization_code_scopes": "53c4f795f10b3afd",
    "OAuth2Validator.revoke_token": "6ff31c6f69452a67",
    "OAuth2Validator.validate_code": "7c0d04cfdf75a27f",
    "OAuth2Validator.validate_refresh_token": "50e7ceb3ce23bfec",
    "TokenChecksumField.pre_save": "8e8de38ff3d0505a",
    "TokenView.authorization_flow_token_response": "82abd9808f7a9178",
    "set_oauthlib_user_to_device_request_user": "d9c2aebef68671fa",
}


def source_hash(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(DOT_SOURCES))
def test_dot_functions_under_the_token_storage_overrides_are_unchanged(name):
    assert source_hash(DOT_SOURCES[name]) == DOT_SOURCE_HASHES[name]


def test_dot_derives_the_checksum_from_the_stored_column_on_every_save(db, user):
    # The storage relies on it: the checksum is the SHA-256 of the column, on the
    # first save and on later ones (RefreshToken.revoke() saves the row again).
    access_token = AccessToken.objects.create(
        user=user, token=stored("value"), expires=timezone.now() + timedelta(minutes=5)
    )
    access_token.scope = "openid"
    access_token.save()
    access_token.refresh_from_db()
    assert access_token.token_checksum == token_storage.checksum(stored("value"))


# A stored hash in other letter case (MySQL/MariaDB compare strings case-insensitively) -----------


def test_a_stored_hash_in_upper_case_gets_no_plaintext_candidate():
    """``H1$<HEX>`` is a stored hash too: as a legacy plaintext candidate it would equal the
    stored ``h1$<hex>`` under MySQL's and MariaDB's default (case-insensitive) collations."""
    stored_hash = token_storage.stored_value("some-device-code")
    for presented in (stored_hash.upper(), "H1$" + stored_hash.removeprefix(token_storage.PREFIX)):
        candidates = token_storage.stored_candidates(presented)
        assert all(candidate.startswith(token_storage.PREFIX) for candidate in candidates)
        assert presented not in candidates


def test_a_copied_user_or_device_code_in_upper_case_is_no_credential(browser, api, cli):
    device = start_device(api, cli)
    grant = DeviceGrant.objects.get()
    for value in (grant.device_code.upper(), "H1$" + grant.device_code.removeprefix(token_storage.PREFIX)):
        assert poll(api, cli, value).json()["error"] == "invalid_grant", value
    for value in (grant.user_code, grant.user_code.upper()):
        assert browser.post("/o/device/", {"user_code": value}).status_code != 302, value
    assert DeviceGrant.objects.get().user is None
    assert browser.post("/o/device/", {"user_code": device["user_code"]}).status_code == 302
