"""The maintenance benchmark keeps running: a quick round of each side on the same backlog."""

from __future__ import annotations

import pytest

from benchmarks import harness, maintenance, pins

# As under `python -m benchmarks`: no test transaction around it, whose savepoints would count.
pytestmark = pytest.mark.django_db(transaction=True)


def test_maintenance_benchmark_runs_both_sides_within_its_pinned_queries():
    dot, app = maintenance.run(harness.Options(quick=True))

    assert (dot.side, app.side) == (harness.PLAIN_DOT, harness.APP)
    assert dot.workload == app.workload == maintenance.WORKLOAD
    # Same backlog for both: DOT deletes the 1,100 expired access tokens nobody points at;
    # the app also expires the due consents, ends the lapsed families and deletes their
    # rotated refresh tokens (each family's newest one stays).
    assert dot.operations == 1_100
    assert app.operations == 1_468
    assert "consents 34" in app.note and "families 66" in app.note and "refresh tokens 134" in app.note
    assert "peak Python memory" in app.note
    assert app.queries == pins.QUERIES[(maintenance.WORKLOAD, harness.APP)]
    assert not harness.regressions([dot, app], pins.QUERIES)
