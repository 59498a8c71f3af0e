"""Django admin at scale: the consents and token-family changelists, and the per-user page.

Seeds N consents, each with one token family (device) holding a DOT refresh token
and its access token, over N/10 users and up to 1,000 clients (10% enduring,
10% revoked, 5% expired; a quarter of the devices DPoP key-bound), plus one user
with 10,000 devices. Then, as a superuser through Django's test client, times in
alternating rounds:

- the consents changelist, filtered by a client, and searched for a user
  (offline_access only: plain DOT has no consents);
- the token-family changelist, filtered by a client, and searched, against DOT's own
  RefreshToken changelist over the same tokens (``/admin/oauth2_provider/refreshtoken/``,
  what a plain DOT site's admin shows: it counts every row twice);
- the per-user page of the user with 10,000 devices (first page of each list).

Sizes: 1,000,000 consents on PostgreSQL (seeded with ``INSERT ... SELECT
generate_series``, then VACUUM ANALYZE: 296 s on a 2-core machine at a load average of
about 7, the whole run 8 minutes), 100,000 on SQLite (``bulk_create`` in chunks;
``--scale`` changes either), 60 in quick mode.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access_bench python -m benchmarks --only admin
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from benchmarks import harness

NAME = "admin"

CONSENTS = "/admin/offline_access/consent/"
FAMILIES = "/admin/offline_access/offlinetokenfamily/"
DOT_REFRESH_TOKENS = "/admin/oauth2_provider/refreshtoken/"

#: Devices of the one user whose per-user page is timed (the issue's "10,000 devices").
USER_DEVICES = 10_000
#: Clients of that user, each with one consent behind a share of the devices.
USER_CLIENTS = 5
CHUNK = 5_000


def run(options: harness.Options) -> list[harness.Result]:
    from django.db import connection

    postgres = connection.vendor == "postgresql"
    size = options.size(1_000_000 if postgres else 100_000, 60)
    devices = 150 if options.quick else USER_DEVICES  # --scale sizes the table, not this user
    rounds = 3 if options.quick else 25
    start = time.perf_counter()
    scene = seed(size, devices)
    seeded = time.perf_counter() - start
    note = (
        f"{size:,} consents and {size:,} devices (each a refresh and an access token), "
        f"{scene['clients']} clients; seeded in {seeded:.0f} s; {rounds} rounds"
    )
    rows = requests(scene)
    timings, queries = measure(scene["admin"], [(row[0], row[1], row[2]) for row in rows], rounds)
    return report(rows, timings, queries, note)


def report(rows, timings, queries, note: str) -> list[harness.Result]:
    """One Result per timed request; the sizes in the first row's note."""
    results = []
    for workload, side, url, baseline in rows:
        if side == harness.PLAIN_DOT:
            text = f"GET {url} (DOT's own RefreshTokenAdmin)"
        else:
            text = f"GET {url}" + (f"; {note}" if not results else "")
        results.append(
            harness.Result(
                workload=workload,
                side=side,
                seconds=timings[(workload, side)],
                queries=queries[(workload, side)],
                note=text,
                baseline=baseline,
            )
        )
    return results


def requests(scene: dict) -> list[tuple[str, str, str, str | None]]:
    """(row workload, side, URL, baseline side) of every timed request."""
    client_filter = f"?application__id__exact={scene['client_pk']}"
    search = f"?q={scene['search']}"
    user_page = f"/admin/offline_access/consent/user/{scene['device_user_pk']}/"
    return [
        (f"{NAME}: consents changelist", harness.APP, CONSENTS, harness.APP),
        (f"{NAME}: consents by client", harness.APP, CONSENTS + client_filter, harness.APP),
        (f"{NAME}: consents search", harness.APP, CONSENTS + search, harness.APP),
        (f"{NAME}: token families changelist", harness.APP, FAMILIES, None),
        (f"{NAME}: token families changelist", harness.PLAIN_DOT, DOT_REFRESH_TOKENS, None),
        (f"{NAME}: token families by client", harness.APP, FAMILIES + client_filter, None),
        (f"{NAME}: token families by client", harness.PLAIN_DOT, DOT_REFRESH_TOKENS + client_filter, None),
        (f"{NAME}: token families search", harness.APP, FAMILIES + search, None),
        (f"{NAME}: token families search", harness.PLAIN_DOT, DOT_REFRESH_TOKENS + search, None),
        (f"{NAME}: user page", harness.APP, user_page, harness.APP),
    ]


def measure(admin, requests: list[tuple[str, str, str]], rounds: int):
    """GET each URL once per round, the order rotating; per (workload, side): times, queries."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    browser = Client()
    browser.force_login(admin)
    for _workload, _side, url in requests:  # warm up: templates, admin site, session, caches
        response = browser.get(url)
        assert response.status_code == 200, (url, response.status_code)
    timings: dict[tuple[str, str], list[float]] = {(w, s): [] for w, s, _u in requests}
    queries: dict[tuple[str, str], int] = {}
    for number in range(rounds):
        shift = number % len(requests)
        order = requests[shift:] + requests[:shift]
        if number % 2:
            order.reverse()
        for workload, side, url in order:
            with CaptureQueriesContext(connection) as captured:
                start = time.perf_counter()
                response = browser.get(url)
                elapsed = time.perf_counter() - start
            assert response.status_code == 200, (url, response.status_code)
            timings[(workload, side)].append(elapsed)
            queries[(workload, side)] = len(captured)
    return timings, queries


# Seeding -------------------------------------------------------------------------------------------


def seed(size: int, devices: int) -> dict:
    """The rows described in the module docstring; returns what the requests need."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from oauth2_provider.models import get_application_model

    from tests import factories

    User = get_user_model()
    Application = get_application_model()
    tag = uuid.uuid4().hex[:6]
    admin = User.objects.filter(username="bench-admin").first() or factories.UserFactory(
        username="bench-admin", is_staff=True, is_superuser=True
    )
    clients = max(10, min(1_000, size // 1_000))
    applications = Application.objects.bulk_create(
        Application(
            name=f"Bench {tag} client {i}",
            client_id=f"bench-{tag}-{i}",
            client_secret="",
            hash_client_secret=False,
            client_type="public",
            authorization_grant_type="authorization-code",
            redirect_uris="http://127.0.0.1/callback",
        )
        for i in range(clients)
    )
    users = max(1, size // 10)
    device_user = factories.UserFactory(username=f"bench-{tag}-devices")
    if connection.vendor == "postgresql":
        _seed_postgresql(tag, size, users, [a.pk for a in applications], device_user.pk, devices)
    else:
        _seed_orm(tag, size, users, applications, device_user, devices)
    # A user whose name is a prefix of ten others: a realistic "find this person" search.
    search = f"bench-{tag}-user-{min(users - 1, 4242)}"
    return {
        "admin": admin,
        "clients": clients,
        "client_pk": applications[1].pk,
        "device_user_pk": device_user.pk,
        "search": search,
    }


_STATUS_SQL = "CASE WHEN g %% 10 = 3 THEN 'revoked' WHEN g %% 20 = 7 THEN 'expired' ELSE 'active' END"


def _seed_postgresql(tag, size, users, application_pks, device_user_pk, devices) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    from offline_access.models import Consent, OfflineTokenFamily

    user_table = get_user_model()._meta.db_table
    consent_table = Consent._meta.db_table
    family_table = OfflineTokenFamily._meta.db_table
    access_table = get_access_token_model()._meta.db_table
    refresh_table = get_refresh_token_model()._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {user_table} (password, is_superuser, username, first_name, last_name, email,
                                      is_staff, is_active, date_joined)
            SELECT '!', false, 'bench-{tag}-user-' || g, '', '',
                   'user' || g || '@corp' || (g %% 50) || '.test', false, true, now()
            FROM generate_series(0, %s - 1) AS g
            """,
            [users],
        )
        # Consent g: user g % users, its k-th client (k = g // users): distinct clients per user,
        # so at most one active consent per user, client and kind.
        cursor.execute(
            f"""
            INSERT INTO {consent_table} (user_id, application_id, client_id, client_name, kind, scope,
                                         status, created_at, granted_at, reason, expires_at, ended_at,
                                         end_reason)
            SELECT u.id, a.id, a.client_id, a.name,
                   CASE WHEN g %% 10 = 0 THEN 'enduring' ELSE 'interactive' END,
                   'openid offline_access', {_STATUS_SQL},
                   now() - (%s - g) * interval '90 seconds', now() - (%s - g) * interval '90 seconds', '',
                   CASE WHEN g %% 5 = 1 THEN now() + interval '30 days' END,
                   CASE WHEN ({_STATUS_SQL}) <> 'active' THEN now() - interval '1 hour' END, ''
            FROM generate_series(0, %s - 1) AS g
            JOIN {user_table} u ON u.username = 'bench-{tag}-user-' || (g %% %s)
            JOIN oauth2_provider_application a
              ON a.id = (%s::bigint[])[1 + ((g %% %s) + g / %s) %% %s]
            """,
            [size, size, size, users, application_pks, users, users, len(application_pks)],
        )
        # The user with many devices: a consent for each of a few clients.
        cursor.execute(
            f"""
            INSERT INTO {consent_table} (user_id, application_id, client_id, client_name, kind, scope,
                                         status, created_at, granted_at, reason, end_reason)
            SELECT %s, a.id, a.client_id, a.name, 'interactive', 'openid offline_access', 'active',
                   now(), now(), '', ''
            FROM oauth2_provider_application a WHERE a.id = ANY(%s::bigint[])
            """,
            [device_user_pk, application_pks[:USER_CLIENTS]],
        )
        cursor.execute(
            f"""
            INSERT INTO {family_table} (token_family, consent_id, user_id, application_id, created_at,
                                        ended_at, code_hash, dpop_jkt)
            SELECT gen_random_uuid(), c.id, c.user_id, c.application_id, c.granted_at, c.ended_at, '',
                   CASE WHEN c.id %% 4 = 0 THEN lpad(c.id::text, 43, 'k') ELSE '' END
            FROM {consent_table} c
            JOIN {user_table} u ON u.id = c.user_id AND u.username LIKE 'bench-{tag}-user-%%'
            """,
            [],
        )
        cursor.execute(
            f"""
            INSERT INTO {family_table} (token_family, consent_id, user_id, application_id, created_at,
                                        code_hash, dpop_jkt)
            SELECT gen_random_uuid(), c.id, c.user_id, c.application_id, now() - g * interval '1 minute',
                   '', ''
            FROM generate_series(0, %s - 1) AS g
            JOIN {consent_table} c
              ON c.user_id = %s AND c.application_id = (%s::bigint[])[1 + g %% %s]
            """,
            [devices, device_user_pk, application_pks[:USER_CLIENTS], USER_CLIENTS],
        )
        # One access token and one refresh token per family, linked by id offsets from the
        # current maxima (other workloads may have written tokens to this database already).
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {access_table}")
        access_base = cursor.fetchone()[0]
        cursor.execute(
            f"""
            INSERT INTO {access_table} (id, token, token_checksum, expires, scope, application_id,
                                        user_id, created, updated, resource)
            SELECT %s + f.id, 'bench-access-' || f.id,
                   encode(sha256(('bench-access-' || f.id)::bytea), 'hex'),
                   CASE WHEN f.ended_at IS NULL THEN now() + interval '1 hour' ELSE f.ended_at END,
                   'openid offline_access', f.application_id, f.user_id, f.created_at, f.created_at, '[]'
            FROM {family_table} f
            WHERE f.user_id IN (SELECT id FROM {user_table} WHERE username LIKE 'bench-{tag}-%%')
            """,
            [access_base],
        )
        cursor.execute(
            f"""
            INSERT INTO {refresh_table} (token, token_checksum, access_token_id, application_id, user_id,
                                         created, updated, revoked, token_family, resource)
            SELECT 'bench-refresh-' || f.id, encode(sha256(('bench-refresh-' || f.id)::bytea), 'hex'),
                   %s + f.id, f.application_id, f.user_id, f.created_at, f.created_at, f.ended_at,
                   f.token_family, '[]'
            FROM {family_table} f
            WHERE f.user_id IN (SELECT id FROM {user_table} WHERE username LIKE 'bench-{tag}-%%')
            """,
            [access_base],
        )
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), (SELECT MAX(id) FROM {access_table}))",
            [access_table],
        )
        # As autovacuum leaves a settled table: planner statistics and the visibility map
        # (index-only scans). VACUUM runs outside a transaction only: in autocommit mode.
        in_transaction = not connection.get_autocommit()
        for table in (user_table, consent_table, family_table, access_table, refresh_table):
            cursor.execute(f"{'ANALYZE' if in_transaction else 'VACUUM ANALYZE'} {table}")


def _seed_orm(tag, size, users, applications, device_user, devices) -> None:
    """The same rows through ``bulk_create`` in chunks (SQLite and other databases)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    from offline_access.models import Consent, OfflineTokenFamily

    User = get_user_model()
    AccessToken, RefreshToken = get_access_token_model(), get_refresh_token_model()
    now = timezone.now()
    user_rows = []
    for start in range(0, users, CHUNK):
        user_rows += User.objects.bulk_create(
            User(
                username=f"bench-{tag}-user-{g}",
                email=f"user{g}@corp{g % 50}.test",
                password="!",
            )
            for g in range(start, min(users, start + CHUNK))
        )

    def status(g: int) -> str:
        return "revoked" if g % 10 == 3 else "expired" if g % 20 == 7 else "active"

    def add_families(consent_rows, created_of) -> None:
        families = OfflineTokenFamily.objects.bulk_create(
            OfflineTokenFamily(
                token_family=uuid.uuid4(),
                consent=consent,
                user_id=consent.user_id,
                application_id=consent.application_id,
                created_at=created_of(i, consent),
                ended_at=consent.ended_at,
                dpop_jkt=f"{consent.pk:k>43}" if consent.pk % 4 == 0 else "",
            )
            for i, consent in enumerate(consent_rows)
        )
        access = AccessToken.objects.bulk_create(
            AccessToken(
                token=f"bench-access-{family.pk}-{tag}",
                token_checksum=uuid.uuid4().hex,
                expires=family.ended_at or now + timedelta(hours=1),
                scope="openid offline_access",
                application_id=family.application_id,
                user_id=family.user_id,
            )
            for family in families
        )
        RefreshToken.objects.bulk_create(
            RefreshToken(
                token=f"bench-refresh-{family.pk}-{tag}",
                token_checksum=uuid.uuid4().hex,
                access_token=token,
                application_id=family.application_id,
                user_id=family.user_id,
                revoked=family.ended_at,
                token_family=family.token_family,
            )
            for family, token in zip(families, access, strict=True)
        )

    for start in range(0, size, CHUNK):
        consents = Consent.objects.bulk_create(
            Consent(
                user=user_rows[g % users],
                application=(application := applications[((g % users) + g // users) % len(applications)]),
                client_id=application.client_id,
                client_name=application.name,
                kind="enduring" if g % 10 == 0 else "interactive",
                scope="openid offline_access",
                status=status(g),
                created_at=now - (size - g) * timedelta(seconds=90),
                granted_at=now - (size - g) * timedelta(seconds=90),
                expires_at=now + timedelta(days=30) if g % 5 == 1 else None,
                ended_at=now - timedelta(hours=1) if status(g) != "active" else None,
            )
            for g in range(start, min(size, start + CHUNK))
        )
        add_families(consents, lambda _i, consent: consent.granted_at)
    own = Consent.objects.bulk_create(
        Consent(
            user=device_user,
            application=application,
            client_id=application.client_id,
            client_name=application.name,
            kind="interactive",
            scope="openid offline_access",
        )
        for application in applications[:USER_CLIENTS]
    )
    for start in range(0, devices, CHUNK):
        chunk = [own[g % len(own)] for g in range(start, min(devices, start + CHUNK))]
        add_families(chunk, lambda i, _consent, start=start: now - (start + i) * timedelta(minutes=1))
