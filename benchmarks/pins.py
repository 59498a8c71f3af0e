"""Query counts ``python -m benchmarks --quick`` holds each workload to (CI fails above them).

Keys are (workload row name, side); the workload part before a ``:`` is the
module's ``NAME``. Lower a pin when a change saves a query; raising one needs a
reason in the commit.
"""

from __future__ import annotations

QUERIES: dict[tuple[str, str], int] = {
    # Admin at scale (benchmarks/admin_changelists.py): session, user, the client filter's
    # choices, one bounded count, one page of rows, whatever the number of rows.
    ("admin: consents changelist", "offline_access"): 5,
    ("admin: consents by client", "offline_access"): 5,
    ("admin: consents search", "offline_access"): 5,
    ("admin: token families changelist", "offline_access"): 5,
    ("admin: token families by client", "offline_access"): 5,
    ("admin: token families search", "offline_access"): 5,
    # session, admin, the user, and a bounded count and a page for each of its two lists.
    ("admin: user page", "offline_access"): 7,
}
