"""Query counts ``python -m benchmarks --quick`` holds each workload to (CI fails above them).

Keys are (workload row name, side); the workload part before a ``:`` is the
module's ``NAME``. Lower a pin when a change saves a query; raising one needs a
reason in the commit.
"""

from __future__ import annotations

from benchmarks.harness import APP, PLAIN_DOT

QUERIES: dict[tuple[str, str], int] = {
    # Token endpoint (benchmarks/token_endpoint.py), counted in autocommit as a web worker
    # runs them, each transaction with its BEGIN and COMMIT (the same counts on SQLite and
    # PostgreSQL). tests/test_query_counts.py pins the same requests inside a test
    # transaction, where they cost fewer. Plain DOT's rows are pinned so that a DOT
    # upgrade changing them is noticed; the app's rows may also never exceed plain DOT's
    # (Result.max_queries_of).
    ("token: code exchange", PLAIN_DOT): 22,
    ("token: code exchange", APP): 14,
    ("token: refresh", PLAIN_DOT): 23,
    ("token: refresh", APP): 20,
    ("token: DPoP refresh", f"{APP}, public client"): 20,
    # The bearer refresh plus the access token's binding (one INSERT); expired bindings are
    # deleted by maintenance (offline_access.dpop.delete_expired_bindings), not here.
    ("token: DPoP refresh", f"{APP}, public client, DPoP"): 21,
}
