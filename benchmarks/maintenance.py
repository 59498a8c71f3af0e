"""Maintenance at scale (issue 12): the app's maintenance job against DOT's ``cleartokens``.

Seeds a backlog of rows a site accumulates: consents (a third past their
expiry), two token families per consent (a quarter idle for 40 days, a quarter
past the absolute lifetime, the rest live), each with a rotated (revoked) refresh token
and its newest one with an access token, and expired access tokens nobody points
at, in total ``size`` rows of those four kinds (1,000,000 on PostgreSQL, 100,000
on SQLite; ``--quick``: 2,000). The rows are written by INSERT ... SELECT over a
series (generate_series on PostgreSQL, a recursive CTE on SQLite), so seeding a
million rows takes seconds, not the minutes of the ORM.

Sides, each on a freshly seeded backlog (every round re-seeds, so both start
from the same rows):

- ``offline_access``: :func:`offline_access.maintenance.run`, every step;
- ``plain DOT``: DOT's ``cleartokens`` (``clear_expired()``) over the same rows.

They do different work on the same rows: DOT deletes what its rules allow and
knows nothing of consents and families; the app also expires the consents and
ends the families (revoking their tokens) before deleting. Operations are the
rows each side changed or deleted, so rows/s compares throughput. The note gives
the total time, the batches, queries per batch and the peak Python memory
(tracemalloc, running for both sides) that shows the job's memory is bounded by
its batch, not by the table.

Each round first empties the token, consent and family tables: run it on the
harness's own test database only.

    python -m benchmarks --only maintenance
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access_bench \\
        python -m benchmarks --only maintenance
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from datetime import timedelta
from io import StringIO

from benchmarks import harness

NAME = "maintenance"
WORKLOAD = f"{NAME}: expire, end and delete a backlog"

#: Rows of the backlog per kind, per unit of ``size // 20``: consents 1, families 2,
#: refresh tokens 4, access tokens with a refresh token 2; the rest (11) are expired
#: access tokens nobody points at.
UNIT = 20

USER_PREFIX = "bench-maint-"
CLIENT_ID = "bench-maintenance"


def run(options: harness.Options) -> list[harness.Result]:
    from django.db import connection

    from offline_access import maintenance

    if connection.vendor not in _Sql.VENDORS:
        # Its backlog is written in each database's SQL (generate_series, ||, printf); the
        # maintenance job itself is tested on MySQL/MariaDB by tests/test_maintenance.py.
        print(
            f"{NAME}: skipped: the backlog is seeded with PostgreSQL's or SQLite's SQL, "
            f"not {connection.vendor}'s; set DATABASE_URL=postgres://... or leave it empty",
            file=sys.stderr,
        )
        return []
    full = 1_000_000 if connection.vendor == "postgresql" else 100_000
    size = options.size(full, 2_000)
    batch_size = 100 if options.quick else maintenance.DEFAULT_BATCH_SIZE
    rounds = options.size(1, 1)
    application = _application()
    _seed_users(size // UNIT)
    results = {
        harness.APP: harness.Result(WORKLOAD, harness.APP, []),
        harness.PLAIN_DOT: harness.Result(WORKLOAD, harness.PLAIN_DOT, []),
    }
    notes: dict[str, list[str]] = {harness.APP: [], harness.PLAIN_DOT: []}
    for number in range(rounds):
        sides = (harness.APP, harness.PLAIN_DOT) if number % 2 == 0 else (harness.PLAIN_DOT, harness.APP)
        for side in sides:
            seeded = seed(application, size)
            outcome = _measure(side, batch_size)
            result = results[side]
            result.seconds.append(outcome["seconds"])
            result.operations = outcome["rows"]  # the same in every round: the same backlog
            result.queries = outcome["queries"]
            batches = (
                f"{outcome['batches']} batches of {batch_size}, {outcome['queries']} queries "
                f"({outcome['queries'] / outcome['batches']:.1f} per batch)"
                if outcome["batches"]
                else f"{outcome['queries']} queries"
            )
            notes[side].append(
                f"{outcome['rows']:,} rows changed or deleted of {seeded:,} seeded "
                f"in {outcome['seconds']:.1f} s, {batches}, "
                f"peak Python memory {outcome['peak'] / 2**20:.1f} MiB; {outcome['detail']}"
            )
    for side, result in results.items():
        result.note = " | ".join(notes[side])
    _clear()
    return [results[harness.PLAIN_DOT], results[harness.APP]]


def _measure(side: str, batch_size: int) -> dict:
    from django.core.management import call_command
    from django.db import connection

    from offline_access import maintenance

    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    before = _table_counts()
    tracemalloc.start()
    try:
        with connection.execute_wrapper(count):
            start = time.perf_counter()
            if side == harness.APP:
                reports = maintenance.run(batch_size=batch_size)
            else:
                call_command("cleartokens", stdout=StringIO(), stderr=StringIO())
                reports = None
            seconds = time.perf_counter() - start
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    after = _table_counts()
    if reports is not None:
        rows = sum(report.total for report in reports)
        batches = sum(report.batches for report in reports)
        detail = "; ".join(str(report).split(";")[0] for report in reports)
    else:
        deleted = {table: before[table] - after[table] for table in before}
        rows = sum(deleted.values())
        batches = 0  # not reported by DOT: one per CLEAR_EXPIRED_TOKENS_BATCH_SIZE rows of each kind
        detail = "deleted " + ", ".join(f"{table} {number:,}" for table, number in deleted.items())
    return {
        "seconds": seconds,
        "rows": rows,
        "batches": batches,
        "queries": queries,
        "peak": peak,
        "detail": detail,
    }


def _table_counts() -> dict[str, int]:
    from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

    return {
        "refresh tokens": get_refresh_token_model().objects.count(),
        "access tokens": get_access_token_model().objects.count(),
        "grants": get_grant_model().objects.count(),
    }


# Seeding ---------------------------------------------------------------------------------


def _application():
    from oauth2_provider.models import get_application_model

    from tests import factories

    return get_application_model().objects.filter(
        client_id=CLIENT_ID
    ).first() or factories.ApplicationFactory(client_id=CLIENT_ID, name="Maintenance benchmark")


def _seed_users(number: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    users = get_user_model()
    existing = users.objects.filter(username__startswith=USER_PREFIX).count()
    if existing >= number:
        return
    sql = _Sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.insert_from_series(
                users,
                {
                    "password": "'!'",
                    "is_superuser": "%s",
                    "username": f"'{USER_PREFIX}' || i",
                    "first_name": "''",
                    "last_name": "''",
                    "email": "''",
                    "is_staff": "%s",
                    "is_active": "%s",
                    "date_joined": "%s",
                },
                first=existing + 1,
                last=number,
            ),
            [False, False, True, timezone.now()],
        )


def seed(application, size: int) -> int:
    """Empty the tables, then write the backlog of ``size`` rows; return how many were written."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    from offline_access.models import Consent, OfflineTokenFamily

    _clear()
    unit = size // UNIT
    now = timezone.now()
    sql = _Sql(connection.vendor)
    users, consents, families = get_user_model(), Consent, OfflineTokenFamily
    access_tokens, refresh_tokens = get_access_token_model(), get_refresh_token_model()
    idle_used, recent_used = now - timedelta(days=40), now - timedelta(hours=1)
    idle_created = now - timedelta(days=60)
    # Families created 60 days ago were last used 40 days ago (idle); the others an hour ago.
    family_used = "CASE WHEN f.created_at = %s THEN %s ELSE %s END"
    used = [idle_created, idle_used, recent_used]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sql.table(consents)} ({sql.columns(consents, _CONSENT)}) "
            f"SELECT u.id, %s, %s, %s, 'interactive', 'openid offline_access', 'active', %s, %s, '', "
            # Kinds follow the row's place, not its id, so every run has the same mix.
            f"CASE WHEN (u.id - m.first) %% 3 = 0 THEN %s ELSE NULL END, '' "
            f"FROM {sql.table(users)} u CROSS JOIN (SELECT MIN(id) AS first FROM {sql.table(users)} "
            f"WHERE username LIKE %s) m WHERE u.username LIKE %s ORDER BY u.id LIMIT %s",
            [
                application.pk,
                application.client_id,
                application.name,
                now - timedelta(days=60),
                now - timedelta(days=60),
                now - timedelta(days=1),
                USER_PREFIX + "%",
                USER_PREFIX + "%",
                unit,
            ],
        )
        cursor.execute(
            f"INSERT INTO {sql.table(families)} ({sql.columns(families, _FAMILY)}) "
            f"SELECT {sql.uuid('c.id * 2 + k.j')}, c.id, c.user_id, c.application_id, "
            # A quarter idle, a quarter past the absolute lifetime, half live.
            f"CASE WHEN ((c.id - m.first) * 2 + k.j) %% 4 = 0 THEN %s "
            f"WHEN ((c.id - m.first) * 2 + k.j) %% 4 = 1 THEN %s ELSE %s END, "
            f"'', '' FROM {sql.table(consents)} c CROSS JOIN (SELECT 0 AS j UNION ALL SELECT 1) k "
            f"CROSS JOIN (SELECT MIN(id) AS first FROM {sql.table(consents)}) m",
            [idle_created, now - timedelta(days=400), now - timedelta(days=10)],
        )
        # The newest refresh token's access token, one per family (checksum = the family id).
        cursor.execute(
            f"INSERT INTO {sql.table(access_tokens)} ({sql.columns(access_tokens, _ACCESS)}) "
            f"SELECT f.user_id, f.application_id, 'bench-fat-' || f.id, {sql.hex('f.id', 64)}, "
            f"{family_used}, 'openid offline_access', '[]', {family_used}, {family_used} "
            f"FROM {sql.table(families)} f",
            [idle_created, idle_used + timedelta(minutes=10), recent_used + timedelta(minutes=10)] + used * 2,
        )
        # Per family: a rotated predecessor (revoked when the newest was issued), then the newest.
        cursor.execute(
            f"INSERT INTO {sql.table(refresh_tokens)} ({sql.columns(refresh_tokens, _REFRESH)}) "
            f"SELECT f.user_id, f.application_id, 'bench-rt-' || (f.id * 2 + k.j), "
            f"{sql.hex('f.id * 2 + k.j', 64)}, "
            f"CASE WHEN k.j = 1 THEN (SELECT a.id FROM {sql.table(access_tokens)} a "
            f"WHERE a.token_checksum = {sql.hex('f.id', 64)}) END, "
            f"f.token_family, '[]', {family_used}, {family_used}, "
            f"CASE WHEN k.j = 0 THEN {family_used} END "
            # Predecessors first, so that each family's newest token has its highest id.
            f"FROM {sql.table(families)} f CROSS JOIN (SELECT 0 AS j UNION ALL SELECT 1) k "
            "ORDER BY k.j, f.id",
            used * 3,
        )
        orphans = size - 9 * unit
        cursor.execute(
            sql.insert_from_series(
                access_tokens,
                {
                    "user": "%s",
                    "application": "%s",
                    "token": "'bench-oat-' || i",
                    "token_checksum": sql.hex("i", 63, prefix="a"),
                    "expires": "%s",
                    "scope": "'read'",
                    "resource": "'[]'",
                    "created": "%s",
                    "updated": "%s",
                },
                first=1,
                last=orphans,
            ),
            [
                users.objects.filter(username__startswith=USER_PREFIX)
                .order_by("pk")
                .values_list("pk", flat=True)[0],
                application.pk,
                now - timedelta(hours=2),
                now - timedelta(hours=3),
                now - timedelta(hours=3),
            ],
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # fresh statistics, as autovacuum would give a real table
    return unit + 2 * unit + 2 * unit + 4 * unit + orphans


_CONSENT = [
    "user",
    "application",
    "client_id",
    "client_name",
    "kind",
    "scope",
    "status",
    "created_at",
    "granted_at",
    "reason",
    "expires_at",
    "end_reason",
]
_FAMILY = ["token_family", "consent", "user", "application", "created_at", "code_hash", "dpop_jkt"]
_ACCESS = [
    "user",
    "application",
    "token",
    "token_checksum",
    "expires",
    "scope",
    "resource",
    "created",
    "updated",
]
_REFRESH = [
    "user",
    "application",
    "token",
    "token_checksum",
    "access_token",
    "token_family",
    "resource",
    "created",
    "updated",
    "revoked",
]


def _clear() -> None:
    """Empty every table the job reads (not users or clients)."""
    from django.db import connection, transaction
    from oauth2_provider.models import (
        get_access_token_model,
        get_device_grant_model,
        get_grant_model,
        get_id_token_model,
        get_refresh_token_model,
    )

    from offline_access.models import (
        Consent,
        ConsentEvent,
        DPoPBoundAccessToken,
        GrantAuthentication,
        OfflineTokenFamily,
        SealedSuccessorPair,
    )

    models = [
        SealedSuccessorPair,
        ConsentEvent,
        OfflineTokenFamily,
        Consent,
        DPoPBoundAccessToken,
        GrantAuthentication,
        get_refresh_token_model(),
        get_access_token_model(),
        get_id_token_model(),
        get_grant_model(),
        get_device_grant_model(),
    ]
    sql = _Sql(connection.vendor)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(sql.table(model) for model in models)}")
        else:
            for model in models:
                cursor.execute(f"DELETE FROM {sql.table(model)}")


class _Sql:
    """The few expressions PostgreSQL and SQLite spell differently."""

    VENDORS = ("postgresql", "sqlite")

    def __init__(self, vendor: str):
        from django.db import connection

        if vendor not in self.VENDORS:
            raise NotImplementedError(f"The maintenance benchmark seeds PostgreSQL or SQLite, not {vendor}.")
        self.vendor = vendor
        self.quote = connection.ops.quote_name

    def table(self, model) -> str:
        return self.quote(model._meta.db_table)

    def columns(self, model, names: list[str]) -> str:
        return ", ".join(self.quote(model._meta.get_field(name).column) for name in names)

    def hex(self, number: str, width: int, prefix: str = "") -> str:
        """``number`` in hexadecimal, zero-padded to ``width`` digits (unique, fixed-length values)."""
        if self.vendor == "postgresql":
            return f"'{prefix}' || lpad(to_hex({number}), {width}, '0')"
        # Every statement here is run with parameters, so a literal % is doubled.
        return f"'{prefix}' || printf('%%0{width}x', {number})"

    def uuid(self, number: str) -> str:
        if self.vendor == "postgresql":
            return f"({self.hex(number, 32)})::uuid"
        return self.hex(number, 32)

    def insert_from_series(self, model, values: dict[str, str], *, first: int, last: int) -> str:
        """INSERT one row per ``i`` from ``first`` to ``last``; ``values`` are SQL over ``i``."""
        columns = self.columns(model, list(values))
        select = ", ".join(values.values())
        if self.vendor == "postgresql":
            return (
                f"INSERT INTO {self.table(model)} ({columns}) "
                f"SELECT {select} FROM generate_series({first}, {last}) AS s(i)"
            )
        return (
            f"WITH RECURSIVE s(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM s WHERE i < {last}) "
            f"INSERT INTO {self.table(model)} ({columns}) SELECT {select} FROM s"
        )
