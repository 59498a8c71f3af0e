"""OpenID Connect offline access (OIDC Core 1.0, section 11) for django-oauth-toolkit."""

OFFLINE_ACCESS_SCOPE = "offline_access"

__version__ = "0.1.0"
