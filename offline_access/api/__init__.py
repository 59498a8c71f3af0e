"""REST API (Django REST framework, the ``drf`` extra): consents for users and administrators.

Include it with ``path("api/offline-access/", include("offline_access.api.urls"))``.
"""

try:
    import rest_framework  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "offline_access.api needs Django REST framework: pip install 'django-offline-access[drf]'"
    ) from exc
