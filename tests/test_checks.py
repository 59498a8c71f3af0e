"""System checks: one test per id, and proof they are registered with Django."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.checks import ERROR, WARNING
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from oauth2_provider.settings import oauth2_settings

from offline_access import checks
from offline_access.validators import OfflineAccessValidator


class CustomValidator(OfflineAccessValidator):
    """A site's own validator built on the app's: E001 accepts subclasses."""


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def all_checks() -> list:
    return [
        *checks.check_validator(None),
        *checks.check_scope(None),
        *checks.check_settings(None),
        *checks.check_authorization_view(None),
        *checks.check_logout_keeps_offline_tokens(None),
        *checks.check_server_metadata_location(None),
    ]


def test_example_configuration_passes_every_check():
    assert all_checks() == []


# E001 -----------------------------------------------------------------------------------


def test_E001_plain_dot_validator(dot_settings):
    dot_settings(OAUTH2_VALIDATOR_CLASS="oauth2_provider.oauth2_validators.OAuth2Validator")
    errors = checks.check_validator(None)
    assert ids(errors) == ["offline_access.E001"]
    assert errors[0].level == ERROR
    assert "offline_access.validators.OfflineAccessValidator" in errors[0].hint


def test_E001_accepts_a_subclass(dot_settings):
    dot_settings(OAUTH2_VALIDATOR_CLASS="tests.test_checks.CustomValidator")
    assert checks.check_validator(None) == []


# E002 -----------------------------------------------------------------------------------


def test_E002_offline_access_missing_from_scopes(dot_settings):
    scopes = {name: text for name, text in oauth2_settings.SCOPES.items() if name != "offline_access"}
    dot_settings(SCOPES=scopes)
    errors = checks.check_scope(None)
    assert ids(errors) == ["offline_access.E002"]
    assert errors[0].level == ERROR
    assert "offline_access" in errors[0].hint


# E003 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [[("REFRESH_TOKEN_IDLE_TIMEOUT", 60)], "REFRESH_TOKEN_IDLE_TIMEOUT=60", None]
)
def test_E003_not_a_dict(settings, value):
    settings.OFFLINE_ACCESS = value
    errors = checks.check_settings(None)
    assert ids(errors) == ["offline_access.E003"]
    assert "must be a dict" in errors[0].msg


def test_E003_unknown_key(settings):
    settings.OFFLINE_ACCESS = {"REFRESH_TOKEN_IDLE_TIMOUT": timedelta(days=7)}  # typo
    errors = checks.check_settings(None)
    assert ids(errors) == ["offline_access.E003"]
    assert "'REFRESH_TOKEN_IDLE_TIMOUT'" in errors[0].msg
    assert "REFRESH_TOKEN_IDLE_TIMEOUT" in errors[0].hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REFRESH_TOKEN_IDLE_TIMEOUT", "30 days"),
        ("REFRESH_TOKEN_ABSOLUTE_LIFETIME", True),
        ("CONSENT_FORM_MAX_AGE", [600]),
        ("CONSENT_TEMPLATE", 42),
        ("API_SCOPE", ["connected_apps"]),
        ("API_SCOPE", "  "),
    ],
)
def test_E003_wrong_type(settings, key, value):
    settings.OFFLINE_ACCESS = {key: value}
    errors = checks.check_settings(None)
    assert ids(errors) == ["offline_access.E003"]
    assert repr(key) in errors[0].msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REFRESH_TOKEN_IDLE_TIMEOUT", timedelta(days=-1)),
        ("REFRESH_TOKEN_ABSOLUTE_LIFETIME", -60),
        ("CONSENT_FORM_MAX_AGE", 0),
        ("CONSENT_FORM_MAX_AGE", timedelta(0)),
    ],
)
def test_E003_non_positive_duration(settings, key, value):
    settings.OFFLINE_ACCESS = {key: value}
    errors = checks.check_settings(None)
    assert ids(errors) == ["offline_access.E003"]
    assert "must be positive" in errors[0].msg


def test_E003_none_where_not_allowed(settings):
    settings.OFFLINE_ACCESS = {"CONSENT_FORM_MAX_AGE": None}
    errors = checks.check_settings(None)
    assert ids(errors) == ["offline_access.E003"]
    assert "cannot be None" in errors[0].msg


def test_E003_valid_values(settings):
    settings.OFFLINE_ACCESS = {
        "REFRESH_TOKEN_IDLE_TIMEOUT": None,
        "REFRESH_TOKEN_ABSOLUTE_LIFETIME": None,
        "CONSENT_FORM_MAX_AGE": 300,
        "CONSENT_TEMPLATE": "my_site/consent.html",
    }
    assert checks.check_settings(None) == []
    settings.OFFLINE_ACCESS = {"REFRESH_TOKEN_IDLE_TIMEOUT": timedelta(days=7), "CONSENT_FORM_MAX_AGE": 1.5}
    assert checks.check_settings(None) == []


def test_E003_reports_every_problem(settings):
    settings.OFFLINE_ACCESS = {"UNKNOWN": 1, "CONSENT_FORM_MAX_AGE": None, "REFRESH_TOKEN_IDLE_TIMEOUT": -1}
    assert ids(checks.check_settings(None)) == ["offline_access.E003"] * 3


# E004 -----------------------------------------------------------------------------------


@override_settings(ROOT_URLCONF="tests.urls_dot_authorize")
def test_E004_authorize_served_by_dot_view():
    errors = checks.check_authorization_view(None)
    assert ids(errors) == ["offline_access.E004"]
    assert errors[0].level == ERROR
    assert "offline_access.urls" in errors[0].hint


@override_settings(ROOT_URLCONF="tests.urls_without_oauth")
def test_E004_quiet_without_an_authorization_endpoint():
    assert checks.check_authorization_view(None) == []


# W001 -----------------------------------------------------------------------------------


def test_W001_rp_logout_deletes_tokens(dot_settings):
    dot_settings(OIDC_RP_INITIATED_LOGOUT_ENABLED=True, OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS=True)
    warnings = checks.check_logout_keeps_offline_tokens(None)
    assert ids(warnings) == ["offline_access.W001"]
    assert warnings[0].level == WARNING
    assert "OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS" in warnings[0].hint


def test_W001_quiet_when_rp_logout_is_off(dot_settings):
    dot_settings(OIDC_RP_INITIATED_LOGOUT_ENABLED=False, OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS=True)
    assert checks.check_logout_keeps_offline_tokens(None) == []


# W002 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    ["django.core.cache.backends.locmem.LocMemCache", "django.core.cache.backends.dummy.DummyCache"],
)
def test_W002_attempt_limit_cache_not_shared_between_workers(settings, backend):
    settings.CACHES = {"default": {"BACKEND": backend}}
    warnings = checks.check_attempt_limit_cache(None)
    assert ids(warnings) == ["offline_access.W002"]
    assert "DEVICE_CODE_ATTEMPT_CACHE" in warnings[0].hint


def test_W002_quiet_with_a_shared_cache(settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache"},
    }
    settings.OFFLINE_ACCESS = {"DEVICE_CODE_ATTEMPT_CACHE": "shared"}
    assert checks.check_attempt_limit_cache(None) == []


def test_W002_runs_only_with_deploy(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    call_command("check", "--fail-level", "WARNING", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(SystemCheckError, match=r"offline_access\.W002"):
        call_command("check", "--deploy", "--fail-level", "WARNING", stdout=StringIO(), stderr=StringIO())


# W003 -----------------------------------------------------------------------------------


def test_W003_rfc8414_location_missing(settings):
    settings.ROOT_URLCONF = "tests.urls_without_well_known"
    warnings = checks.check_server_metadata_location(None)
    assert ids(warnings) == ["offline_access.W003"]
    assert warnings[0].level == WARNING
    assert "/.well-known/oauth-authorization-server/o" in warnings[0].msg
    assert 'include("offline_access.well_known_urls")' in warnings[0].hint


def test_W003_quiet_when_the_app_is_mounted_at_the_root(settings):
    settings.ROOT_URLCONF = "tests.urls_oauth_at_root"
    assert checks.check_server_metadata_location(None) == []


@pytest.mark.parametrize(
    ("issuer", "check_ids"),
    [
        ("https://id.example.com/o", []),  # the example site's root line serves /o
        ("https://id.example.com", []),  # ...and a bare host
        ("https://id.example.com/auth/", []),  # any issuer path: the view checks it
    ],
)
def test_W003_follows_oidc_iss_endpoint(dot_settings, issuer, check_ids):
    dot_settings(OIDC_ISS_ENDPOINT=issuer)
    assert ids(checks.check_server_metadata_location(None)) == check_ids


def test_W003_with_oidc_iss_endpoint_and_no_root_line(dot_settings, settings):
    settings.ROOT_URLCONF = "tests.urls_without_well_known"
    dot_settings(OIDC_ISS_ENDPOINT="https://id.example.com")
    # A bare-host issuer is served by the app's own /.well-known/... only when mounted at the root.
    assert ids(checks.check_server_metadata_location(None)) == ["offline_access.W003"]


def test_W003_quiet_without_the_apps_urls(settings):
    settings.ROOT_URLCONF = "tests.urls_without_oauth"
    assert checks.check_server_metadata_location(None) == []


# Registration -------------------------------------------------------------------------------


def test_checks_are_registered_with_django(dot_settings):
    call_command("check", stdout=StringIO(), stderr=StringIO())  # the example site is clean

    scopes = {name: text for name, text in oauth2_settings.SCOPES.items() if name != "offline_access"}
    dot_settings(SCOPES=scopes)
    with pytest.raises(SystemCheckError, match=r"offline_access\.E002"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize(
    ("override", "check_id"),
    [
        ({"OAUTH2_VALIDATOR_CLASS": "oauth2_provider.oauth2_validators.OAuth2Validator"}, "E001"),
        ({"OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS": True}, "W001"),
    ],
)
def test_checks_registered_for_each_dot_setting(dot_settings, override, check_id):
    dot_settings(**override)
    with pytest.raises(SystemCheckError, match=rf"offline_access\.{check_id}"):
        call_command("check", "--fail-level", "WARNING", stdout=StringIO(), stderr=StringIO())


def test_settings_and_url_checks_are_registered(settings):
    settings.OFFLINE_ACCESS = {"UNKNOWN": 1}
    with pytest.raises(SystemCheckError, match=r"offline_access\.E003"):
        call_command("check", stdout=StringIO(), stderr=StringIO())
    settings.OFFLINE_ACCESS = {}
    settings.ROOT_URLCONF = "tests.urls_dot_authorize"
    with pytest.raises(SystemCheckError, match=r"offline_access\.E004"):
        call_command("check", stdout=StringIO(), stderr=StringIO())
    settings.ROOT_URLCONF = "tests.urls_without_well_known"
    with pytest.raises(SystemCheckError, match=r"offline_access\.W003"):
        call_command("check", "--fail-level", "WARNING", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DEVICE_CODE_ATTEMPTS", 0),
        ("DEVICE_CODE_ATTEMPTS", "10"),
        ("DEVICE_CODE_ATTEMPTS", True),
        ("DEVICE_CODE_ATTEMPT_WINDOW", 0),
        ("DEVICE_CODE_ATTEMPT_WINDOW", None),
        ("DEVICE_CODE_ATTEMPT_CACHE", "no-such-cache"),
        ("DEVICE_CODE_CLIENT_ADDRESS", 42),
        ("DEVICE_CODE_ATTEMPT_CACHE", ["default"]),
    ],
)
def test_E003_device_code_attempt_settings(settings, key, value):
    settings.OFFLINE_ACCESS = {key: value}
    errors = checks.check_settings(None)
    assert ids(errors) == ["offline_access.E003"]
    assert repr(key) in errors[0].msg
