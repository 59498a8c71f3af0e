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
    # The whole maintenance job over the quick backlog (2,000 rows, batches of 100): 17
    # batches at a fixed cost each (tests/test_maintenance.py pins them one by one). On
    # SQLite; PostgreSQL runs 91: SQLite's count includes each transaction's BEGIN. Was 104
    # (15 batches): revoking now clears the refresh tokens' links to their access tokens,
    # so the backlog's 134 expired access tokens of ended families are no longer pinned by
    # a revoked refresh token and the tokens step deletes them (two more batches), and each
    # revoking batch locks its live refresh tokens first (issue 12).
    ("maintenance: expire, end and delete a backlog", "offline_access"): 116,
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
    # One transaction of a whole-client revocation (benchmarks/revoke_client.py): the same
    # count for 10 consents with 100 families as for 500 with 5,000 (tests/test_client_revocation.py).
    # 14 since the live refresh tokens are locked and read with their access tokens' keys
    # first, so that those access tokens are deleted (one heap write each) rather than
    # expired (a new row version in each of seven indexes): issue 12.
    ("revoke: one batch (a transaction)", "offline_access"): 14,
}

# consent (benchmarks/consent_screen.py). The app's figures are tests/test_query_counts.py's
# pins (CONSENT_SCREEN_QUERIES, CONSENT_POST_QUERIES, CONSENT_RENEWAL_POST_QUERIES,
# CONSENT_DENY_POST_QUERIES, CONSENT_SCREEN_AUTO_QUERIES; tests/test_benchmark_consent.py
# holds them equal), the same for a crowded account. Plain DOT's, as measured on DOT 3.4.1:
# session, user, the application twice (validator and view) for the screen, the same and the
# grant's INSERT for Allow; Deny reads the session, the user and the application once and writes
# nothing; approval_prompt=auto adds one query loading the user's live access tokens for the
# client (75 rows in the crowded account).
QUERIES.update(
    {
        ("consent: screen (GET)", "plain DOT"): 4,
        ("consent: screen (GET)", "plain DOT, crowded account"): 4,
        ("consent: screen (GET)", "offline_access"): 5,
        ("consent: screen (GET)", "offline_access, crowded account"): 5,
        ("consent: Allow (POST)", "plain DOT"): 5,
        ("consent: Allow (POST)", "plain DOT, crowded account"): 5,
        ("consent: Allow (POST)", "offline_access"): 21,
        ("consent: Allow (POST)", "offline_access, crowded account"): 21,
        ("consent: Allow again (POST)", "plain DOT"): 5,
        ("consent: Allow again (POST)", "plain DOT, crowded account"): 5,
        ("consent: Allow again (POST)", "offline_access"): 19,
        ("consent: Allow again (POST)", "offline_access, crowded account"): 19,
        ("consent: Deny (POST)", "plain DOT"): 3,
        ("consent: Deny (POST)", "plain DOT, crowded account"): 3,
        ("consent: Deny (POST)", "offline_access"): 9,
        ("consent: Deny (POST)", "offline_access, crowded account"): 9,
        ("consent: screen, approval_prompt=auto (GET)", "plain DOT"): 5,
        ("consent: screen, approval_prompt=auto (GET)", "plain DOT, crowded account"): 5,
        ("consent: screen, approval_prompt=auto (GET)", "offline_access"): 5,
        ("consent: screen, approval_prompt=auto (GET)", "offline_access, crowded account"): 5,
    }
)

# MySQL/MariaDB is not a benchmark database, but the test suite runs these workloads on it
# (tox -e py311-dj52-mariadb). Two statements differ there: an approval (first or renewal)
# first locks the user's row (offline_access.services._serialize_approvals), and a revocation
# reads the live refresh tokens' keys before updating them by key
# (offline_access.services._lock_live_refresh_tokens). tests/test_query_counts.py has
# the same as APPROVAL_USER_LOCK_QUERIES and LIVE_REFRESH_TOKENS_READ_QUERIES.
MYSQL_EXTRA_QUERIES: dict[tuple[str, str], int] = {
    ("consent: Allow (POST)", "offline_access"): 1,
    ("consent: Allow (POST)", "offline_access, crowded account"): 1,
    ("consent: Allow again (POST)", "offline_access"): 1,
    ("consent: Allow again (POST)", "offline_access, crowded account"): 1,
    ("revoke: one batch (a transaction)", "offline_access"): 1,
}


def _for_the_configured_database() -> None:
    from django.db import connection

    if connection.vendor == "mysql":
        for key, extra in MYSQL_EXTRA_QUERIES.items():
            QUERIES[key] += extra


_for_the_configured_database()
