"""The admin benchmark keeps running in quick mode, at the query counts benchmarks/pins.py holds."""

from __future__ import annotations

import pytest

from benchmarks import admin_changelists, harness, pins

pytestmark = pytest.mark.django_db


def test_admin_benchmark_quick_mode_runs_every_page_within_its_pins():
    results = admin_changelists.run(harness.Options(quick=True))

    rows = {(result.workload, result.side): result for result in results}
    assert set(rows) == {
        (workload, side)
        for workload, side, _url, _baseline in admin_changelists.requests(
            {"client_pk": 0, "device_user_pk": 0, "search": ""}
        )
    }
    assert all(len(result.seconds) == 3 for result in results)
    assert (
        harness.regressions(results, {k: v for k, v in pins.QUERIES.items() if k[0].startswith("admin:")})
        == []
    )
    # The pins are exact: the app's pages cost what they pin, not less (lower the pin then).
    for key, pinned in pins.QUERIES.items():
        if key[0].startswith("admin:"):
            assert rows[key].queries == pinned, key
    # DOT's own changelist counts the whole table twice (filtered and full): one query more.
    assert rows[("admin: token families changelist", harness.PLAIN_DOT)].queries == 6
