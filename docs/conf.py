"""Sphinx configuration: ``tox -e docs`` or ``python -m sphinx docs docs/_build/html``.

autodoc imports the app, so Django is configured here with the least a site needs
to import ``offline_access``: no database is opened and nothing from ``tests/`` or
``example_project/`` is used, so the docs also build from the sdist.
"""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if not settings.configured:
    settings.configure(
        SECRET_KEY="docs-build-not-a-secret",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "oauth2_provider",
            "offline_access",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        OAUTH2_PROVIDER={
            "OAUTH2_VALIDATOR_CLASS": "offline_access.validators.OfflineAccessValidator",
            "SCOPES": {"openid": "openid", "offline_access": "offline access"},
        },
        USE_TZ=True,
    )
    django.setup()

import offline_access  # noqa: E402

project = "django-offline-access"
author = "django-offline-access contributors"
copyright = "django-offline-access contributors"
release = offline_access.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]

# Headings get anchors so pages can link to each other's sections (page.md#a-heading).
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"django-offline-access {release}"
