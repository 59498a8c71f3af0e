"""tests/packaging_check.py (tox -e packaging) catches a wheel or sdist that ships the wrong files.

The real build runs in the packaging tox env; here the rules run on hand-made archives.
"""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

import offline_access
from tests import packaging_check

VERSION = packaging_check.source_version()
WHEEL = f"django_offline_access-{VERSION}-py3-none-any.whl"
SDIST = f"django_offline_access-{VERSION}.tar.gz"
DIST_INFO = f"django_offline_access-{VERSION}.dist-info"
EXPECTED = packaging_check.source_files()
DOCS = packaging_check.docs_files()


def metadata(version: str = VERSION) -> str:
    return f"Metadata-Version: 2.1\nName: django-offline-access\nVersion: {version}\n\n"


def write_wheel(path, names, version: str = VERSION) -> None:
    with zipfile.ZipFile(path, "w") as wheel:
        for name in names:
            wheel.writestr(name, "")
        wheel.writestr(f"{DIST_INFO}/METADATA", metadata(version))


def write_sdist(path, names) -> None:
    with tarfile.open(path, "w:gz") as sdist:
        for name in names:
            info = tarfile.TarInfo(f"django_offline_access-{VERSION}/{name}")
            sdist.addfile(info, io.BytesIO(b""))


@pytest.fixture
def dist(tmp_path):
    """A dist folder holding a correct wheel and sdist of the source tree."""
    write_wheel(tmp_path / WHEEL, sorted(EXPECTED))
    write_sdist(tmp_path / SDIST, sorted(EXPECTED | set(packaging_check.SDIST_EXTRA) | DOCS))
    return tmp_path


def test_the_version_has_one_source():
    assert VERSION == offline_access.__version__


def test_the_source_tree_holds_templates_and_migrations():
    assert set(packaging_check.REQUIRED) <= EXPECTED
    assert not any("__pycache__" in name for name in EXPECTED)


def test_the_docs_sources_are_found_without_a_local_build(tmp_path):
    assert {"docs/conf.py", "docs/index.md"} <= DOCS
    (tmp_path / "docs" / "_build" / "html").mkdir(parents=True)
    (tmp_path / "docs" / "_build" / "html" / "index.html").write_text("")
    (tmp_path / "docs" / "index.md").write_text("")
    assert packaging_check.docs_files(tmp_path) == {"docs/index.md"}


def test_a_complete_build_passes(dist):
    problems, names = packaging_check.check(dist)
    assert problems == []
    assert "offline_access/templates/offline_access/consent.html" in names


def test_a_missing_template_fails(dist):
    template = "offline_access/templates/offline_access/device/status.html"
    write_wheel(dist / WHEEL, sorted(EXPECTED - {template}))
    problems, _ = packaging_check.check(dist)
    assert problems == [f"wheel: {template} is in the source tree but not in the wheel"]


def test_missing_migrations_fail(dist):
    write_wheel(dist / WHEEL, sorted(name for name in EXPECTED if "/migrations/" not in name))
    problems, _ = packaging_check.check(dist)
    assert "wheel: offline_access/migrations/0001_initial.py is missing (required)" in problems


@pytest.mark.parametrize(
    "stray",
    [
        "tests/test_checks.py",
        "example_project/settings.py",
        "benchmarks/harness.py",
        "docs/conf.py",
        "manage.py",
    ],
)
def test_repository_files_in_the_wheel_fail(dist, stray):
    write_wheel(dist / WHEEL, sorted(EXPECTED | {stray}))
    problems, _ = packaging_check.check(dist)
    assert problems == [f"wheel: {stray} is not part of the app"]


def test_tests_in_the_sdist_fail(dist):
    write_sdist(
        dist / SDIST, sorted(EXPECTED | set(packaging_check.SDIST_EXTRA) | DOCS | {"tests/test_checks.py"})
    )
    problems, _ = packaging_check.check(dist)
    assert problems == ["sdist: tests/test_checks.py is not part of the app"]


def test_an_sdist_without_the_docs_fails(dist):
    write_sdist(dist / SDIST, sorted(EXPECTED | set(packaging_check.SDIST_EXTRA) | (DOCS - {"docs/conf.py"})))
    problems, _ = packaging_check.check(dist)
    assert problems == ["sdist: docs/conf.py is missing"]


def test_a_local_docs_build_in_the_sdist_fails(dist):
    stray = "docs/_build/html/index.html"
    write_sdist(dist / SDIST, sorted(EXPECTED | set(packaging_check.SDIST_EXTRA) | DOCS | {stray}))
    problems, _ = packaging_check.check(dist)
    assert problems == [f"sdist: {stray} is a local documentation build (prune it in MANIFEST.in)"]


def test_sdist_without_changelog_fails(dist):
    write_sdist(dist / SDIST, sorted(EXPECTED | DOCS | {"pyproject.toml", "README.md", "PKG-INFO"}))
    problems, _ = packaging_check.check(dist)
    assert problems == ["sdist: CHANGELOG.md is missing"]


def test_a_catalogue_without_its_compiled_file_fails(dist):
    po = "offline_access/locale/xx/LC_MESSAGES/django.po"
    names = sorted(EXPECTED | {po})
    problems = packaging_check.wheel_problems(names, metadata(), EXPECTED | {po}, VERSION)
    assert problems == [f"wheel: {po} has no compiled .mo beside it (run compilemessages)"]
    names.append(po.replace(".po", ".mo"))
    assert packaging_check.wheel_problems(names, metadata(), EXPECTED | {po}, VERSION) == []


def test_a_catalogue_left_out_of_the_wheel_fails():
    po, mo = (
        "offline_access/locale/xx/LC_MESSAGES/django.po",
        "offline_access/locale/xx/LC_MESSAGES/django.mo",
    )
    problems = packaging_check.wheel_problems(sorted(EXPECTED), metadata(), EXPECTED | {po, mo}, VERSION)
    assert sorted(problems) == [
        f"wheel: {mo} is in the source tree but not in the wheel",
        f"wheel: {po} is in the source tree but not in the wheel",
    ]


def test_a_version_mismatch_fails(dist):
    write_wheel(dist / WHEEL, sorted(EXPECTED), version="9.9.9")
    problems, _ = packaging_check.check(dist)
    assert problems == [f"wheel: METADATA says Version '9.9.9', offline_access.__version__ is '{VERSION}'"]


def test_a_stale_wheel_beside_the_new_one_fails(dist):
    write_wheel(dist / "django_offline_access-0.0.1-py3-none-any.whl", sorted(EXPECTED), version="0.0.1")
    problems, _ = packaging_check.check(dist)
    assert len(problems) == 1 and problems[0].startswith(f"expected one {WHEEL}")
