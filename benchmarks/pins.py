"""Query counts ``python -m benchmarks --quick`` holds each workload to (CI fails above them).

Keys are (workload row name, side); the workload part before a ``:`` is the
module's ``NAME``. Lower a pin when a change saves a query; raising one needs a
reason in the commit.
"""

from __future__ import annotations

QUERIES: dict[tuple[str, str], int] = {
    # The whole maintenance job over the quick backlog (2,000 rows, batches of 100): 15
    # batches at a fixed cost each (tests/test_maintenance.py pins them one by one). On
    # SQLite; PostgreSQL runs 81: SQLite's count includes each transaction's BEGIN.
    ("maintenance: expire, end and delete a backlog", "offline_access"): 104,
}
