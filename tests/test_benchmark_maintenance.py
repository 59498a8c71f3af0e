"""The maintenance benchmark keeps running: a quick round of each side on the same backlog."""

from __future__ import annotations

import pytest
from django.db import connection

from benchmarks import harness, maintenance, pins

# As under `python -m benchmarks`: no test transaction around it, whose savepoints would count.
pytestmark = pytest.mark.django_db(transaction=True)


seeded_here = pytest.mark.skipif(
    connection.vendor not in maintenance._Sql.VENDORS,
    reason="the benchmark seeds its backlog with PostgreSQL's or SQLite's SQL (MySQL: the test below)",
)


@seeded_here
def test_maintenance_benchmark_runs_both_sides_within_its_pinned_queries():
    dot, app = maintenance.run(harness.Options(quick=True))

    assert (dot.side, app.side) == (harness.PLAIN_DOT, harness.APP)
    assert dot.workload == app.workload == maintenance.WORKLOAD
    # Same backlog for both: DOT deletes the 1,100 expired access tokens nobody points at;
    # the app also expires the due consents, ends the lapsed families and deletes their
    # rotated refresh tokens (each family's newest one stays), and the expired access
    # tokens of the refresh tokens it revoked (which no longer point at them).
    assert dot.operations == 1_100
    assert app.operations == 1_602
    assert "consents 34" in app.note and "families 66" in app.note and "refresh tokens 134" in app.note
    assert "peak Python memory" in app.note
    # SQLite's count includes the BEGIN of each of the 25 transactions (17 batches, and the
    # 8 that find a step's end); PostgreSQL's driver begins them without a statement.
    begins = 25 if connection.vendor == "sqlite" else 0
    assert app.queries == 91 + begins == pins.QUERIES[(maintenance.WORKLOAD, harness.APP)] - 25 + begins
    assert not harness.regressions([dot, app], harness.pins_of(pins.QUERIES, maintenance.NAME))


@pytest.mark.skipif(connection.vendor in maintenance._Sql.VENDORS, reason="the fallback of other databases")
def test_maintenance_benchmark_elsewhere_returns_no_rows_and_says_why(capsys):
    assert maintenance.run(harness.Options(quick=True)) == []
    assert "seeded with PostgreSQL's or SQLite's SQL" in capsys.readouterr().err
