"""The reference pages in docs/ list exactly what the code has (tox -e docs builds them).

A new setting or system check fails here until docs/reference/ describes it, and one
removed from the code fails here until its entry goes.
"""

from __future__ import annotations

import re
from pathlib import Path

from offline_access.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def table_keys(page: Path) -> set[str]:
    """The first cell of each table row, when it is a `code` span."""
    return set(re.findall(r"^\| `([^`]+)`", page.read_text(encoding="utf-8"), flags=re.MULTILINE))


def test_every_setting_is_in_the_settings_reference():
    assert table_keys(DOCS / "reference" / "settings.md") == set(DEFAULTS)


def test_every_system_check_is_in_the_checks_reference():
    source = (ROOT / "offline_access" / "checks.py").read_text(encoding="utf-8")
    in_code = set(re.findall(r'id="(offline_access\.[EW]\d{3})"', source))
    assert {"offline_access.E001", "offline_access.W007"} <= in_code
    page = (DOCS / "reference" / "checks.md").read_text(encoding="utf-8")
    # One section per check: ### `offline_access.E001`
    assert set(re.findall(r"^### `(offline_access\.[EW]\d{3})`", page, flags=re.MULTILINE)) == in_code


def test_the_readme_links_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert targets
    assert [target for target in targets if not (ROOT / target).exists()] == []
