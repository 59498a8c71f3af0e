"""Query counts ``python -m benchmarks --quick`` holds each workload to (CI fails above them).

Keys are (workload row name, side); the workload part before a ``:`` is the
module's ``NAME``. Lower a pin when a change saves a query; raising one needs a
reason in the commit.
"""

from __future__ import annotations

QUERIES: dict[tuple[str, str], int] = {
    # One transaction of a whole-client revocation (benchmarks/revoke_client.py): the same
    # count for 10 consents with 100 families as for 500 with 5,000 (tests/test_client_revocation.py).
    ("revoke: one batch (a transaction)", "offline_access"): 13,
}
