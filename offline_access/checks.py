"""System checks for the mistakes that would silently switch the policy off.

Errors (the site is unsafe or breaks on a request):

- ``offline_access.E001``: DOT's validator is not the app's, so refresh tokens ignore consent.
- ``offline_access.E002``: ``offline_access`` is missing from DOT's ``SCOPES``.
- ``offline_access.E003``: ``OFFLINE_ACCESS`` is not a dict, has an unknown key or a bad value.
- ``offline_access.E004``: ``oauth2_provider:authorize`` is not the app's authorization view.
- ``offline_access.E005``: ``OFFLINE_ACCESS["CONSENT_TEMPLATE"]`` cannot be loaded (missing,
  or a syntax error), so the consent and device approval screens answer 500.

Warnings (something works differently from what the site most likely meant):

- ``offline_access.W001``: RP-initiated logout deletes the user's offline tokens.
- ``offline_access.W002``: the device page's attempt limit uses a per-process cache (deploy).
- ``offline_access.W003``: RFC 8414 metadata is not at its well-known location.
- ``offline_access.W004``: the DPoP replay cache is per-process (deploy).
- ``offline_access.W005``: ``offline_access`` comes before ``oauth2_provider`` in
  ``INSTALLED_APPS``, so DOT's application admin has no offline access policy inline.
- ``offline_access.W006``: the device authorization endpoint is served without an absolute
  ``OAUTH_DEVICE_VERIFICATION_URI``, so the device grant is refused (or shows users a
  link they cannot open).
- ``offline_access.W007``: ``OIDC_ENABLED`` is off: no ID tokens, no OpenID discovery or
  UserInfo, although ``offline_access`` is an OpenID Connect scope.
"""

from __future__ import annotations

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register
from django.urls import NoReverseMatch, Resolver404, resolve, reverse

from . import OFFLINE_ACCESS_SCOPE
from .conf import BOOLEAN_KEYS, DEFAULTS, DURATION_KEYS, NULLABLE_KEYS, as_timedelta

VALIDATOR_PATH = "offline_access.validators.OfflineAccessValidator"


@register(Tags.security)
def check_validator(app_configs, **kwargs):
    from oauth2_provider.settings import oauth2_settings

    from .validators import OfflineAccessValidator

    validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS
    if isinstance(validator, type) and issubclass(validator, OfflineAccessValidator):
        return []
    return [
        Error(
            "DOT's validator is not the offline-access validator, so refresh tokens are issued "
            "without consent.",
            hint=f'Set OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"] = "{VALIDATOR_PATH}" (or a subclass).',
            id="offline_access.E001",
        )
    ]


@register(Tags.compatibility)
def check_scope(app_configs, **kwargs):
    from oauth2_provider.scopes import get_scopes_backend

    if OFFLINE_ACCESS_SCOPE in get_scopes_backend().get_all_scopes():
        return []
    return [
        Error(
            "The offline_access scope is not among DOT's scopes: clients cannot request it and "
            "discovery does not list it.",
            hint='Add "offline_access" with a description to OAUTH2_PROVIDER["SCOPES"].',
            id="offline_access.E002",
        )
    ]


@register(Tags.compatibility)
def check_settings(app_configs, **kwargs):
    value = getattr(django_settings, "OFFLINE_ACCESS", {})
    if not isinstance(value, dict):
        return [
            Error(
                f"OFFLINE_ACCESS must be a dict, not {type(value).__name__}.",
                hint="Set OFFLINE_ACCESS = {...} with the keys from the settings reference "
                "(docs/reference/settings.md).",
                id="offline_access.E003",
            )
        ]
    errors = []
    for key in sorted(set(value) - set(DEFAULTS)):
        errors.append(
            Error(
                f"OFFLINE_ACCESS has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="offline_access.E003",
            )
        )
    for key in sorted(set(value) & DURATION_KEYS):
        problem = None
        if value[key] is None and key not in NULLABLE_KEYS:
            problem = "cannot be None"
        else:
            try:
                duration = as_timedelta(value[key])
            except TypeError as exc:
                problem = str(exc)
            else:
                if duration is not None and duration.total_seconds() <= 0:
                    problem = "must be positive"
        if problem:
            errors.append(
                Error(
                    f"OFFLINE_ACCESS[{key!r}] {problem}.",
                    hint="Use a datetime.timedelta or a number of seconds"
                    + (", or None to disable it." if key in NULLABLE_KEYS else "."),
                    id="offline_access.E003",
                )
            )
    attempts = value.get("DEVICE_CODE_ATTEMPTS", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        errors.append(
            Error(
                "OFFLINE_ACCESS['DEVICE_CODE_ATTEMPTS'] must be a positive whole number.",
                hint="The failed user-code entries allowed per account and address in a window, e.g. 10.",
                id="offline_access.E003",
            )
        )
    for cache_key in ("DEVICE_CODE_ATTEMPT_CACHE", "DPOP_REPLAY_CACHE"):
        cache_alias = value.get(cache_key, "default")
        if not isinstance(cache_alias, str) or cache_alias not in django_settings.CACHES:
            errors.append(
                Error(
                    f"OFFLINE_ACCESS[{cache_key!r}] names no cache in CACHES: {cache_alias!r}.",
                    hint=f"Use one of: {', '.join(sorted(django_settings.CACHES))}.",
                    id="offline_access.E003",
                )
            )
    if "DPOP_SIGNING_ALGS" in value:
        from .dpop import _ASYMMETRIC_ALGS, DEFAULT_SIGNING_ALGS

        algs = value["DPOP_SIGNING_ALGS"]
        if (
            isinstance(algs, str)
            or not isinstance(algs, (list, tuple))
            or not algs
            or any(alg not in _ASYMMETRIC_ALGS for alg in algs)
        ):
            errors.append(
                Error(
                    "OFFLINE_ACCESS['DPOP_SIGNING_ALGS'] must be a non-empty list of asymmetric JWS "
                    "algorithms.",
                    hint=f"For example {list(DEFAULT_SIGNING_ALGS)!r}; never none or HS256.",
                    id="offline_access.E003",
                )
            )
    getter = value.get("DEVICE_CODE_CLIENT_ADDRESS")
    if getter is not None and not callable(getter) and not isinstance(getter, str):
        errors.append(
            Error(
                "OFFLINE_ACCESS['DEVICE_CODE_CLIENT_ADDRESS'] must be None, a callable or its dotted path.",
                id="offline_access.E003",
            )
        )
    for key, meaning in (("CONSENT_TEMPLATE", "a template name"), ("API_SCOPE", "a scope name")):
        if key in value and not (isinstance(value[key], str) and value[key].strip()):
            errors.append(
                Error(
                    f"OFFLINE_ACCESS[{key!r}] must be {meaning} (a non-empty string).",
                    id="offline_access.E003",
                )
            )
    for key in sorted(set(value) & BOOLEAN_KEYS):
        # A string such as "False" would be truthy and quietly keep the behaviour on.
        if not isinstance(value[key], bool):
            errors.append(
                Error(
                    f"OFFLINE_ACCESS[{key!r}] must be True or False, not {type(value[key]).__name__}.",
                    hint="Use a Python bool.",
                    id="offline_access.E003",
                )
            )
    return errors


@register(Tags.urls)
def check_authorization_view(app_configs, **kwargs):
    from .views import OfflineAccessAuthorizationView

    try:
        match = resolve(reverse("oauth2_provider:authorize"))
    except NoReverseMatch:
        return []  # the site serves no authorization endpoint at all
    view_class = getattr(match.func, "view_class", None)
    if view_class is not None and issubclass(view_class, OfflineAccessAuthorizationView):
        return []
    return [
        Error(
            "oauth2_provider:authorize is not served by the offline-access authorization view: "
            "prompt=consent and the consent screen are not enforced.",
            hint='Include "offline_access.urls" instead of "oauth2_provider.urls", '
            'e.g. path("o/", include("offline_access.urls")).',
            id="offline_access.E004",
        )
    ]


@register(Tags.security)
def check_logout_keeps_offline_tokens(app_configs, **kwargs):
    from oauth2_provider.settings import oauth2_settings

    if (
        oauth2_settings.OIDC_RP_INITIATED_LOGOUT_ENABLED
        and oauth2_settings.OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS
    ):
        return [
            Warning(
                "RP-initiated logout deletes all of the user's tokens, so offline access ends "
                "whenever the user signs out.",
                hint='Set OAUTH2_PROVIDER["OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS"] = False.',
                id="offline_access.W001",
            )
        ]
    return []


#: Cache backends that keep nothing shared between web workers.
_PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache": "keeps its counts per worker process",
    "django.core.cache.backends.dummy.DummyCache": "keeps no counts at all, so nothing is ever limited",
}


def _per_process_cache(alias: str) -> tuple[str, str] | None:
    """``(backend class name, what goes wrong)`` when cache ``alias`` is not shared by workers."""
    from django.conf import settings as django_settings

    backend = django_settings.CACHES.get(alias, {}).get("BACKEND", "")
    problem = _PER_PROCESS_CACHES.get(backend)
    return None if problem is None else (backend.rsplit(".", 1)[-1], problem)


@register(Tags.security, deploy=True)
def check_attempt_limit_cache(app_configs, **kwargs):
    """RFC 8628 5.1: the device page's attempt limit needs a cache every worker shares."""
    from .conf import settings

    alias = settings.DEVICE_CODE_ATTEMPT_CACHE
    found = _per_process_cache(alias)
    if found is None:
        return []
    backend, problem = found
    return [
        Warning(
            f'The cache "{alias}" that limits device-code guessing ({backend}) '
            f"{problem}: with several workers an attacker gets more guesses than "
            'OFFLINE_ACCESS["DEVICE_CODE_ATTEMPTS"].',
            hint='Point OFFLINE_ACCESS["DEVICE_CODE_ATTEMPT_CACHE"] at a shared cache such as '
            "django.core.cache.backends.redis.RedisCache, Memcached or the database cache.",
            id="offline_access.W002",
        )
    ]


#: What a per-process replay cache lets through (RFC 9449 11.1).
_REPLAY_PROBLEMS = {
    "LocMemCache": "remembers DPoP proofs per worker process, so a proof replayed to another "
    "worker is accepted",
    "DummyCache": "remembers no DPoP proof at all, so every replayed proof is accepted",
}


@register(Tags.security, deploy=True)
def check_dpop_replay_cache(app_configs, **kwargs):
    """RFC 9449 11.1: replayed DPoP proofs are only caught with a cache every worker shares."""
    from .conf import settings

    alias = settings.DPOP_REPLAY_CACHE
    found = _per_process_cache(alias)
    if found is None:
        return []
    backend, _problem = found
    return [
        Warning(
            f'The cache "{alias}" that detects replayed DPoP proofs ({backend}) {_REPLAY_PROBLEMS[backend]}.',
            hint='Point OFFLINE_ACCESS["DPOP_REPLAY_CACHE"] at a shared cache such as '
            "django.core.cache.backends.redis.RedisCache, Memcached or the database cache "
            "(a single-process site may ignore this warning).",
            id="offline_access.W004",
        )
    ]


@register(Tags.urls)
def check_server_metadata_location(app_configs, **kwargs):
    """RFC 8414 section 3: the metadata document at the well-known location for the issuer."""
    from oauth2_provider.settings import oauth2_settings

    from . import metadata
    from .views import OfflineAccessServerMetadataView

    if oauth2_settings.OIDC_ISS_ENDPOINT:
        issuer_path = metadata.issuer_path(oauth2_settings.OIDC_ISS_ENDPOINT)
    else:
        try:
            discovery = reverse("oauth2_provider:oidc-connect-discovery-info")
        except NoReverseMatch:
            return []  # the app's URLs are not mounted: nothing to describe
        issuer_path = metadata.issuer_path(discovery.removesuffix(metadata.WELL_KNOWN_OPENID_CONFIGURATION))
    location = metadata.WELL_KNOWN_SERVER_METADATA + issuer_path
    try:
        view_class = getattr(resolve(location).func, "view_class", None)
    except Resolver404:
        view_class = None
    if view_class is not None and issubclass(view_class, OfflineAccessServerMetadataView):
        return []
    return [
        Warning(
            f"The RFC 8414 server metadata is not served at {location}, where clients that "
            "follow RFC 8414 section 3 look for it.",
            hint='Add path("", include("offline_access.well_known_urls")) to the root URLconf.',
            id="offline_access.W003",
        )
    ]


@register(Tags.templates)
def check_consent_template(app_configs, **kwargs):
    """The consent screen's template loads (P2, P7: the consent and device approval screens)."""
    from django.template import TemplateDoesNotExist, TemplateSyntaxError
    from django.template.loader import get_template

    value = getattr(django_settings, "OFFLINE_ACCESS", {})
    name = value.get("CONSENT_TEMPLATE", DEFAULTS["CONSENT_TEMPLATE"]) if isinstance(value, dict) else None
    if not isinstance(name, str) or not name.strip():
        return []  # E003 reports a value that is not a template name
    try:
        get_template(name)
    except TemplateDoesNotExist:
        problem = "was not found by any template engine"
        hint = (
            "Create the template in a directory of TEMPLATES (or an app's templates/ folder), "
            'or remove OFFLINE_ACCESS["CONSENT_TEMPLATE"] to use "offline_access/consent.html".'
        )
    except TemplateSyntaxError as exc:
        problem = f"does not compile: {exc}"
        hint = "Fix the template; the consent screen renders it on every authorization that asks consent."
    else:
        return []
    return [
        Error(
            f'OFFLINE_ACCESS["CONSENT_TEMPLATE"] = {name!r} {problem}, so the consent screen and '
            "the device approval page answer 500.",
            hint=hint,
            id="offline_access.E005",
        )
    ]


@register(Tags.admin)
def check_app_order(app_configs, **kwargs):
    """``offline_access`` after ``oauth2_provider``: its admin adds an inline to DOT's one."""
    from django.apps import apps

    if not apps.is_installed("django.contrib.admin"):
        return []
    names = [config.name for config in apps.get_app_configs()]
    if "oauth2_provider" not in names or names.index("offline_access") > names.index("oauth2_provider"):
        return []
    return [
        Warning(
            '"offline_access" comes before "oauth2_provider" in INSTALLED_APPS: Django\'s admin '
            "loads the app's admin before DOT has registered its application admin, so the "
            "application change page has no offline access policy section (the policy keeps "
            "its own admin screen).",
            hint='Move "offline_access" after "oauth2_provider" in INSTALLED_APPS.',
            id="offline_access.W005",
        )
    ]


@register(Tags.compatibility)
def check_device_verification_uri(app_configs, **kwargs):
    """RFC 8628 3.2: the device grant needs an absolute verification URI to show the user."""
    from urllib.parse import urlsplit

    from oauth2_provider.settings import oauth2_settings

    try:
        endpoint = reverse("oauth2_provider:device-authorization")
    except NoReverseMatch:
        return []  # the site serves no device authorization endpoint
    uri = oauth2_settings.server_kwargs.get("verification_uri")
    if not uri:
        message = (
            f"The device authorization endpoint ({endpoint}) is served but "
            "OAUTH_DEVICE_VERIFICATION_URI is not set: it refuses every request with "
            "unsupported_grant_type, and discovery does not list the device grant."
        )
    else:
        parts = urlsplit(str(uri))
        if parts.scheme in ("http", "https") and parts.netloc:
            return []
        message = (
            f"OAUTH_DEVICE_VERIFICATION_URI {uri!r} is not an absolute http(s) URL: a device "
            "shows it to the user, who has to open it in a browser on another device."
        )
    return [
        Warning(
            message,
            hint='Set OAUTH2_PROVIDER["OAUTH_DEVICE_VERIFICATION_URI"] to the absolute URL of the '
            'device page, e.g. "https://id.example.com/o/device/". A site whose clients never use '
            'the device grant can add "offline_access.W006" to SILENCED_SYSTEM_CHECKS.',
            id="offline_access.W006",
        )
    ]


@register(Tags.compatibility)
def check_oidc_enabled(app_configs, **kwargs):
    """OIDC Core 1.0 section 11: offline_access is an OpenID Connect scope."""
    from oauth2_provider.settings import oauth2_settings

    if oauth2_settings.OIDC_ENABLED:
        return []
    return [
        Warning(
            "DOT's OIDC_ENABLED is off: the offline access rules still hold, but clients get no "
            "ID token, and OpenID discovery and UserInfo answer 404, although offline_access is "
            "an OpenID Connect scope (OIDC Core 1.0 section 11).",
            hint='Set OAUTH2_PROVIDER["OIDC_ENABLED"] = True and an OIDC_RSA_PRIVATE_KEY.',
            id="offline_access.W007",
        )
    ]
