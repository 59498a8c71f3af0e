"""Check the built sdist and wheel hold the app and nothing else (``tox -e packaging``).

Usage: ``python tests/packaging_check.py DIST_DIR`` after ``python -m build --outdir DIST_DIR``.

The wheel must hold every file of the app's source tree (``offline_access/``: code,
migrations, templates, translation catalogues, static files or ``py.typed`` once
there are any), each ``.po`` catalogue with its compiled ``.mo`` (Django reads only
the ``.mo``), and nothing from the repository's tests, example site, benchmarks or
docs. The sdist holds the app, what builds it, and the documentation's sources
(``docs/``, without a local build in ``docs/_build/``), so the docs build from it.
The version in both file names and in the wheel's metadata is
``offline_access.__version__``, the one place it is written. Exit status 1 lists
every problem found.

Not collected by pytest (no ``test_`` prefix); ``tests/test_packaging_check.py``
tests the rules on hand-made archives.
"""

from __future__ import annotations

import ast
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "offline_access"
DIST_NAME = "django_offline_access"

#: Files the app cannot work without: if one is missing, package data is misconfigured.
REQUIRED = (
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/migrations/__init__.py",
    f"{PACKAGE}/migrations/0001_initial.py",
    f"{PACKAGE}/templates/{PACKAGE}/consent.html",
    f"{PACKAGE}/templates/{PACKAGE}/base.html",
)
#: Repository folders that are in neither archive.
NOT_PUBLISHED = ("tests/", "example_project/", "benchmarks/", ".ci/")
#: The documentation's sources: in the sdist, never in the wheel.
DOCS = "docs/"
#: A local documentation build (``python -m sphinx docs docs/_build/html``), never shipped.
DOCS_BUILD = "docs/_build/"
#: Besides the app: what an sdist must carry to build the wheel and describe it.
SDIST_EXTRA = ("pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO")


def source_version(root: Path = ROOT) -> str:
    """``__version__`` as written in ``offline_access/__init__.py`` (read, not imported)."""
    tree = ast.parse((root / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"no __version__ in {PACKAGE}/__init__.py")


def source_files(root: Path = ROOT) -> set[str]:
    """The app's files as the build sees them: the working tree, minus bytecode."""
    return {
        path.relative_to(root).as_posix()
        for path in (root / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    }


def docs_files(root: Path = ROOT) -> set[str]:
    """The documentation's source files, as MANIFEST.in grafts them: ``docs/`` minus a local build."""
    return {
        relative
        for path in (root / DOCS).rglob("*")
        if path.is_file()
        and not (relative := path.relative_to(root).as_posix()).startswith(DOCS_BUILD)
        and "__pycache__" not in path.parts
        and path.suffix not in (".pyc", ".pyo")
    }


def wheel_problems(names: list[str], metadata: str, expected: set[str], version: str) -> list[str]:
    """What is wrong with a wheel holding ``names`` (archive paths) and ``metadata`` (METADATA)."""
    problems = []
    dist_info = f"{DIST_NAME}-{version}.dist-info/"
    present = set(names)
    for name in sorted(set(REQUIRED) - present):
        problems.append(f"wheel: {name} is missing (required)")
    for name in sorted(expected - present - set(REQUIRED)):
        problems.append(f"wheel: {name} is in the source tree but not in the wheel")
    for name in sorted(present):
        if name.startswith((*NOT_PUBLISHED, DOCS)) or name == "manage.py":
            problems.append(f"wheel: {name} is not part of the app")
        elif not name.startswith((f"{PACKAGE}/", dist_info)):
            problems.append(f"wheel: {name} is outside {PACKAGE}/ and {dist_info}")
        elif "__pycache__" in PurePosixPath(name).parts or name.endswith((".pyc", ".pyo")):
            problems.append(f"wheel: {name} is bytecode")
    for name in sorted(n for n in present if n.endswith(".po")):
        if name[: -len(".po")] + ".mo" not in present:
            problems.append(f"wheel: {name} has no compiled .mo beside it (run compilemessages)")
    found = HeaderParser().parsestr(metadata).get("Version")
    if found != version:
        problems.append(f"wheel: METADATA says Version {found!r}, offline_access.__version__ is {version!r}")
    return problems


def sdist_problems(
    names: list[str], expected: set[str], version: str, docs: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """What is wrong with an sdist holding ``names`` (archive paths, with their top folder).

    ``docs`` are the documentation's sources it must carry (:func:`docs_files`).
    """
    problems = []
    top = f"{DIST_NAME}-{version}/"
    inside = {name[len(top) :] for name in names if name.startswith(top)}
    for name in sorted(set(names) - {top.rstrip("/")} - {top + name for name in inside}):
        problems.append(f"sdist: {name} is outside {top}")
    for name in sorted((expected | set(SDIST_EXTRA) | set(docs)) - inside):
        problems.append(f"sdist: {name} is missing")
    for name in sorted(inside):
        if name.startswith(NOT_PUBLISHED) or name == "manage.py":
            problems.append(f"sdist: {name} is not part of the app")
        elif name.startswith(DOCS_BUILD):
            problems.append(f"sdist: {name} is a local documentation build (prune it in MANIFEST.in)")
    return problems


def check(dist_dir: Path, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """``(problems, wheel contents)`` for the one wheel and one sdist in ``dist_dir``."""
    version = source_version(root)
    expected = source_files(root)
    wheels = sorted(dist_dir.glob("*.whl"))
    sdists = sorted(dist_dir.glob("*.tar.gz"))
    problems = []
    if [w.name for w in wheels] != [f"{DIST_NAME}-{version}-py3-none-any.whl"]:
        problems.append(
            f"expected one {DIST_NAME}-{version}-py3-none-any.whl, found {[w.name for w in wheels]}"
        )
    if [s.name for s in sdists] != [f"{DIST_NAME}-{version}.tar.gz"]:
        problems.append(f"expected one {DIST_NAME}-{version}.tar.gz, found {[s.name for s in sdists]}")
    names: list[str] = []
    if len(wheels) == 1:
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = wheel.namelist()
            metadata_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
            metadata = wheel.read(metadata_name).decode() if metadata_name else ""
        problems += wheel_problems(names, metadata, expected, version)
    if len(sdists) == 1:
        with tarfile.open(sdists[0]) as sdist:
            members = [m.name for m in sdist.getmembers() if not m.isdir()]
        problems += sdist_problems(members, expected, version, docs_files(root))
    return problems, names


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    problems, names = check(Path(argv[0]))
    app = sorted(n for n in names if n.startswith(f"{PACKAGE}/"))
    kinds = {
        "python modules (migrations apart)": [
            n for n in app if n.endswith(".py") and "/migrations/" not in n
        ],
        "migrations": [n for n in app if "/migrations/" in n],
        "templates": [n for n in app if "/templates/" in n],
        "translation catalogues (.po)": [n for n in app if n.endswith(".po")],
        "compiled catalogues (.mo)": [n for n in app if n.endswith(".mo")],
        "static files": [n for n in app if "/static/" in n],
        "py.typed": [n for n in app if n == f"{PACKAGE}/py.typed"],
    }
    for kind, files in kinds.items():
        print(f"{len(files):4d} {kind}")
    if problems:
        print("\n".join(["", *problems]), file=sys.stderr)
        return 1
    print("The wheel holds the app and its data files, the sdist also the docs' sources; nothing else.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
