"""System checks: one test per id, and proof they are registered with Django."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
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
        *checks.check_consent_template(None),
        *checks.check_app_order(None),
        *checks.check_device_verification_uri(None),
        *checks.check_oidc_enabled(None),
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


# E005 -----------------------------------------------------------------------------------

#: Django templates from memory, for a consent template that exists or does not compile.
LOCMEM_TEMPLATES = {
    "my_site/consent.html": "<form method=post>{{ application.name }}</form>",
    "my_site/broken.html": "{% load no_such_library %}",
    "my_site/unclosed.html": "{% if application %}",
}


@pytest.fixture
def locmem_templates(settings):
    settings.TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {"loaders": [("django.template.loaders.locmem.Loader", LOCMEM_TEMPLATES)]},
        }
    ]


def test_E005_consent_template_missing(settings):
    settings.OFFLINE_ACCESS = {"CONSENT_TEMPLATE": "my_site/consnet.html"}  # typo
    errors = checks.check_consent_template(None)
    assert ids(errors) == ["offline_access.E005"]
    assert errors[0].level == ERROR
    assert "'my_site/consnet.html' was not found" in errors[0].msg
    assert "answer 500" in errors[0].msg


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("my_site/broken.html", "'no_such_library' is not a registered tag library"),
        ("my_site/unclosed.html", "Unclosed tag"),
    ],
)
def test_E005_consent_template_does_not_compile(settings, locmem_templates, name, reason):
    settings.OFFLINE_ACCESS = {"CONSENT_TEMPLATE": name}
    errors = checks.check_consent_template(None)
    assert ids(errors) == ["offline_access.E005"]
    assert "does not compile" in errors[0].msg and reason in errors[0].msg


def test_E005_quiet_with_a_site_template(settings, locmem_templates):
    settings.OFFLINE_ACCESS = {"CONSENT_TEMPLATE": "my_site/consent.html"}
    assert checks.check_consent_template(None) == []


def test_E005_default_template_loads(settings):
    settings.OFFLINE_ACCESS = {}
    assert checks.check_consent_template(None) == []


@pytest.mark.parametrize("value", [42, "  ", ["offline_access/consent.html"]])
def test_E005_leaves_a_wrong_type_to_E003(settings, value):
    settings.OFFLINE_ACCESS = {"CONSENT_TEMPLATE": value}
    assert checks.check_consent_template(None) == []
    assert ids(checks.check_settings(None)) == ["offline_access.E003"]


def test_E005_missing_template_is_a_500_at_the_consent_screen(settings, user, application):
    """Why E005 is an Error: the consent screen cannot be shown at all."""
    from django.test import Client

    from tests.oauth import authorize_url

    settings.OFFLINE_ACCESS = {"CONSENT_TEMPLATE": "my_site/consnet.html"}
    client = Client(raise_request_exception=False)
    client.force_login(user)
    assert client.get(authorize_url(application, prompt="consent")).status_code == 500


# W005 -----------------------------------------------------------------------------------


def test_W005_offline_access_before_oauth2_provider(monkeypatch):
    configs = [config for config in apps.get_app_configs() if config.name != "offline_access"]
    dot = next(i for i, config in enumerate(configs) if config.name == "oauth2_provider")
    configs.insert(dot, apps.get_app_config("offline_access"))  # the mistake's order
    monkeypatch.setattr(apps, "get_app_configs", lambda: configs)
    ordered = [config.name for config in configs]
    assert ordered.index("offline_access") < ordered.index("oauth2_provider")

    warnings = checks.check_app_order(None)
    assert ids(warnings) == ["offline_access.W005"]
    assert warnings[0].level == WARNING
    assert "no offline access policy section" in warnings[0].msg
    assert 'after "oauth2_provider"' in warnings[0].hint


def test_W005_quiet_without_the_admin(monkeypatch):
    configs = [config for config in apps.get_app_configs() if config.name != "django.contrib.admin"]
    configs.sort(key=lambda config: config.name != "offline_access")  # offline_access first
    monkeypatch.setattr(apps, "get_app_configs", lambda: configs)
    monkeypatch.setattr(apps, "is_installed", lambda name: name in {c.name for c in configs})
    assert checks.check_app_order(None) == []


def test_W005_the_inline_really_disappears_in_that_order():
    """The symptom W005 names, in a fresh process (the admin registers once per process).

    If this fails because the inline now appears in either order, W005 can go.
    """
    root = Path(__file__).resolve().parent.parent
    script = (
        "import json, django; django.setup()\n"
        "from io import StringIO\n"
        "from django.contrib import admin\n"
        "from django.core.management import call_command\n"
        "from oauth2_provider.models import get_application_model\n"
        "out = StringIO()\n"
        "call_command('check', stdout=out, stderr=out)\n"
        "inlines = admin.site._registry[get_application_model()].inlines\n"
        "print(json.dumps({'inlines': [i.__name__ for i in inlines], 'check': out.getvalue()}))\n"
    )
    results = {}
    for settings_module in ("tests.settings", "tests.settings_apps_reversed"):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        results[settings_module] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["tests.settings"]["inlines"] == ["ClientPolicyInline"]
    assert "offline_access.W005" not in results["tests.settings"]["check"]
    assert results["tests.settings_apps_reversed"]["inlines"] == []
    assert "offline_access.W005" in results["tests.settings_apps_reversed"]["check"]


# W006 -----------------------------------------------------------------------------------


def test_W006_device_grant_served_without_verification_uri(dot_settings):
    dot_settings(OAUTH_DEVICE_VERIFICATION_URI=None)
    warnings = checks.check_device_verification_uri(None)
    assert ids(warnings) == ["offline_access.W006"]
    assert warnings[0].level == WARNING
    assert "/o/device-authorization/" in warnings[0].msg
    assert "unsupported_grant_type" in warnings[0].msg
    assert "OAUTH_DEVICE_VERIFICATION_URI" in warnings[0].hint


@pytest.mark.parametrize("uri", ["/o/device/", "id.example.com/o/device/", "ftp://id.example.com/device"])
def test_W006_verification_uri_not_absolute(dot_settings, uri):
    dot_settings(OAUTH_DEVICE_VERIFICATION_URI=uri)
    warnings = checks.check_device_verification_uri(None)
    assert ids(warnings) == ["offline_access.W006"]
    assert "not an absolute http(s) URL" in warnings[0].msg


def test_W006_quiet_with_verification_uri_in_extra_server_kwargs(dot_settings):
    dot_settings(
        OAUTH_DEVICE_VERIFICATION_URI=None,
        EXTRA_SERVER_KWARGS={"verification_uri": "https://id.example.com/o/device/"},
    )
    assert checks.check_device_verification_uri(None) == []


def test_W006_quiet_without_a_device_authorization_endpoint(settings, dot_settings):
    settings.ROOT_URLCONF = "tests.urls_without_oauth"
    dot_settings(OAUTH_DEVICE_VERIFICATION_URI=None)
    assert checks.check_device_verification_uri(None) == []


# W007 -----------------------------------------------------------------------------------


def test_W007_oidc_disabled(dot_settings):
    dot_settings(OIDC_ENABLED=False)
    warnings = checks.check_oidc_enabled(None)
    assert ids(warnings) == ["offline_access.W007"]
    assert warnings[0].level == WARNING
    assert 'OAUTH2_PROVIDER["OIDC_ENABLED"] = True' in warnings[0].hint


def test_W007_what_a_site_without_oidc_serves(dot_settings, api, browser, application):
    """Why W007 is a Warning: the policy holds, the OpenID Connect parts are gone."""
    from tests.oauth import exchange_code, get_code

    dot_settings(OIDC_ENABLED=False)
    tokens = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    assert "refresh_token" in tokens and "id_token" not in tokens
    tokens = exchange_code(api, application, get_code(browser, application)).json()
    assert "refresh_token" not in tokens  # P2 without prompt=consent: still enforced
    assert api.get("/o/.well-known/openid-configuration").status_code == 404


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
        ({"OAUTH_DEVICE_VERIFICATION_URI": None}, "W006"),
        ({"OIDC_ENABLED": False}, "W007"),
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
    settings.ROOT_URLCONF = "tests.urls_oauth_at_root"
    settings.OFFLINE_ACCESS = {"CONSENT_TEMPLATE": "my_site/missing.html"}
    with pytest.raises(SystemCheckError, match=r"offline_access\.E005"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


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
