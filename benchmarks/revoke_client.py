"""Revoking everything of one client: 100,000 offline token families (issue 12).

Seeds one client with ``families`` devices (token families), ten per user, each
user with an active consent, each family with a live refresh token and access
token; then:

- ``offline_access``: :func:`offline_access.services.revoke_client_offline_access`
  revokes them all, in batches (each its own transaction). The per-family row
  divides the whole run by the number of families; the batch row shows each
  batch's time (how long it held its row locks) and its queries.
- ``plain DOT``: what a plain DOT site has, ``RefreshToken.revoke()`` for each
  live refresh token of a second client seeded the same way, timed per token on a
  sample (2,000 families in full mode): revoking 100,000 that way takes hours.

On PostgreSQL a thread on its own connection refreshes tokens of ANOTHER client
through /o/token/ while the revocation runs, and the same number of refreshes
with nothing else running is the baseline: the row "other client's refresh
during revocation" shows what the batches cost other clients. SQLite serialises
every writer, so that row is PostgreSQL only.

    python -m benchmarks --only revoke                   # SQLite in memory
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access_bench python -m benchmarks --only revoke
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from datetime import timedelta

from benchmarks import harness

NAME = "revoke"

WHOLE_CLIENT = f"{NAME}: every family of one client, per family"
ONE_BATCH = f"{NAME}: one batch (a transaction)"
OTHER_REFRESH = f"{NAME}: other client's refresh during revocation"
IDLE = "offline_access, no revocation running"
DURING = "offline_access, during revocation"

#: Families per user (and so per consent) seeded.
FAMILIES_PER_USER = 10
#: Families inserted per bulk statement round while seeding.
SEED_CHUNK = 5_000


def seed_client(application, families: int, *, tag: str, per_user: int = FAMILIES_PER_USER) -> int:
    """Give ``application`` ``families`` live offline token families, ``per_user`` per user.

    Each user gets an active interactive consent; each family a live refresh token
    and an unexpired access token. Bulk inserts in chunks, so memory stays bounded
    and 100,000 families take seconds, not the hours the token endpoint would.
    Stored token values are hashed in a real site; any unique value serves here.
    Returns the number of users created.
    """
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    from offline_access.models import Consent, OfflineTokenFamily

    User = get_user_model()
    AccessToken, RefreshToken = get_access_token_model(), get_refresh_token_model()
    now = timezone.now()
    expires = now + timedelta(hours=10)
    users_created = 0
    per_chunk = max(per_user, SEED_CHUNK - SEED_CHUNK % per_user)
    for start in range(0, families, per_chunk):
        count = min(per_chunk, families - start)
        user_count = -(-count // per_user)
        users = User.objects.bulk_create(
            User(username=f"{tag}-{users_created + number}", password="!") for number in range(user_count)
        )
        users_created += user_count
        consents = Consent.objects.bulk_create(
            Consent(
                user=user,
                application=application,
                client_id=application.client_id,
                client_name=application.name,
                kind=Consent.Kind.INTERACTIVE,
                scope="openid offline_access",
                created_at=now,
                granted_at=now,
                granted_by=user,
            )
            for user in users
        )
        owners = [consents[index // per_user] for index in range(count)]
        family_ids = [uuid.uuid4() for _ in range(count)]
        OfflineTokenFamily.objects.bulk_create(
            OfflineTokenFamily(
                token_family=family, consent=consent, user_id=consent.user_id, application=application
            )
            for family, consent in zip(family_ids, owners, strict=True)
        )

        def stored(kind: str, family) -> dict:
            value = f"{kind}-{family.hex}"
            return {"token": value, "token_checksum": hashlib.sha256(value.encode()).hexdigest()}

        access_tokens = AccessToken.objects.bulk_create(
            AccessToken(
                user_id=consent.user_id,
                application=application,
                expires=expires,
                scope="openid offline_access",
                **stored("a", family),
            )
            for family, consent in zip(family_ids, owners, strict=True)
        )
        RefreshToken.objects.bulk_create(
            RefreshToken(
                user_id=consent.user_id,
                application=application,
                access_token=access_token,
                token_family=family,
                **stored("r", family),
            )
            for family, consent, access_token in zip(family_ids, owners, access_tokens, strict=True)
        )
    return users_created


class Refresher:
    """Refreshes another client's token through /o/token/ in a thread with its own connection."""

    def __init__(self, application, refresh_token: str):
        self.application = application
        self.refresh_token = refresh_token

    def run(self, *, count: int | None = None, until: threading.Event | None = None) -> list[float]:
        """Refresh ``count`` times, or until ``until`` is set; return each request's seconds."""
        outcome: dict = {}

        def loop():
            from django.db import connections
            from django.test import Client

            from tests.oauth import refresh

            times: list[float] = []
            client = Client()
            try:
                while (count is None or len(times) < count) and not (until is not None and until.is_set()):
                    start = time.perf_counter()
                    response = refresh(client, self.application, self.refresh_token)
                    times.append(time.perf_counter() - start)
                    assert response.status_code == 200, response.content
                    self.refresh_token = response.json()["refresh_token"]
                outcome["times"] = times
            except BaseException as error:  # noqa: BLE001 - re-raised by the caller
                outcome["error"] = error
            finally:
                connections.close_all()

        thread = threading.Thread(target=loop)
        thread.start()
        self.thread, self.outcome = thread, outcome
        return outcome  # type: ignore[return-value]

    def join(self) -> list[float]:
        self.thread.join(timeout=600)
        assert not self.thread.is_alive(), "the refresher did not finish"
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["times"]


def other_client_refresher(tag: str) -> Refresher:
    """A second client with one real offline token family, issued through the consent screen."""
    from django.test import Client

    from tests import factories
    from tests.oauth import exchange_code, get_code

    application = factories.ApplicationFactory(client_id=f"{tag}-other", name=f"{tag} other client")
    browser = Client()
    browser.force_login(factories.UserFactory(username=f"{tag}-other-user"))
    issued = exchange_code(Client(), application, get_code(browser, application, prompt="consent"))
    assert issued.status_code == 200, issued.content
    return Refresher(application, issued.json()["refresh_token"])


def run(options: harness.Options) -> list[harness.Result]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    from offline_access import services
    from offline_access.models import Consent, ConsentEvent
    from tests import factories

    AccessToken, RefreshToken = get_access_token_model(), get_refresh_token_model()
    families = options.size(100_000, 500)
    sample = min(families, options.size(2_000, 100))
    batch_size = services.CLIENT_REVOCATION_BATCH_SIZE if not options.quick else 10
    postgres = connection.vendor == "postgresql"
    tag = f"rv{uuid.uuid4().hex[:6]}"

    # Another client's refreshes through /o/token/ (PostgreSQL): alone first, then in the
    # background of both sides' revocations, so that both are timed under the same load.
    refresher = other_client_refresher(tag) if postgres else None
    idle_times: list[float] = []
    if refresher is not None:
        refresher.run(count=options.size(200, 20))
        idle_times = refresher.join()

    # plain DOT: one RefreshToken.revoke() per live refresh token, on a sample.
    dot_client = factories.ApplicationFactory(client_id=f"{tag}-dot", name=f"{tag} plain DOT client")
    seed_client(dot_client, sample, tag=f"{tag}-d")
    dot_times: list[float] = []
    dot_queries = 0
    stop_dot = threading.Event()
    if refresher is not None:
        refresher.run(until=stop_dot)
    for token in RefreshToken.objects.filter(application=dot_client, revoked__isnull=True).iterator():
        connection.queries_log.clear()  # it keeps 9,000 queries: counting needs room
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            token.revoke()
            dot_times.append(time.perf_counter() - start)
        dot_queries = max(dot_queries, len(captured))
    stop_dot.set()
    if refresher is not None:
        refresher.join()
    assert not RefreshToken.objects.filter(application=dot_client, revoked__isnull=True).exists()

    # offline_access: the whole client, in batches.
    client = factories.ApplicationFactory(client_id=f"{tag}-app", name=f"{tag} revoked client")
    seed_start = time.perf_counter()
    users = seed_client(client, families, tag=f"{tag}-a")
    seed_seconds = time.perf_counter() - seed_start
    if postgres:
        # A site's tables have statistics (autovacuum analyzes them); 100,000 rows inserted a
        # moment ago have none yet, and the planner would guess the batches' joins blind.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    batch_times: list[float] = []
    batch_queries: list[int] = []
    connection.queries_log.clear()
    with CaptureQueriesContext(connection) as captured:
        marks = {"time": time.perf_counter(), "queries": 0}

        def on_batch(_result):
            now = time.perf_counter()
            batch_times.append(now - marks["time"])
            batch_queries.append(len(captured) - marks["queries"])
            marks["time"], marks["queries"] = now, len(captured)

        stop = threading.Event()
        if refresher is not None:
            refresher.run(until=stop)
        start = time.perf_counter()
        result = services.revoke_client_offline_access(
            client, reason="benchmark", via=ConsentEvent.Via.COMMAND, batch_size=batch_size, on_batch=on_batch
        )
        total_seconds = time.perf_counter() - start
        stop.set()
        total_queries = len(captured)
    during_times = refresher.join() if refresher is not None else []

    now = timezone.now()
    assert (result.consents, result.refresh_tokens, result.access_tokens) == (users, families, families), (
        result
    )
    assert not RefreshToken.objects.filter(application=client, revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(application=client, expires__gt=now).exists()
    assert not Consent.objects.filter(application=client, status=Consent.Status.ACTIVE).exists()

    per_batch = max(batch_queries)
    families_per_batch = batch_size * FAMILIES_PER_USER
    results = [
        harness.Result(
            WHOLE_CLIENT,
            harness.PLAIN_DOT,
            dot_times,
            queries=dot_queries,
            note=f"RefreshToken.revoke() per live refresh token, timed on a sample of {sample:,} families "
            f"(each unit one family); all {families:,} would take "
            f"~{sum(dot_times) / sample * families:,.0f} s"
            + ("; another client refreshing meanwhile, as during the app's run" if postgres else ""),
        ),
        harness.Result(
            WHOLE_CLIENT,
            harness.APP,
            [total_seconds / families],
            note=f"{families:,} families of {users:,} users in {total_seconds:.2f} s (one unit: the run "
            f"divided by its families), {result.batches} batches of {batch_size} consents, "
            f"{total_queries} queries in all ({per_batch} per batch at most); seeded in {seed_seconds:.1f} s",
        ),
        harness.Result(
            ONE_BATCH,
            harness.APP,
            batch_times,
            operations=families_per_batch,
            queries=per_batch,
            note=f"{batch_size} consents and their {families_per_batch:,} families per transaction; slowest "
            f"batch {max(batch_times) * 1000:.1f} ms: the longest any row lock was held"
            + ("" if postgres else "; other clients' refresh latency is measured on PostgreSQL only"),
            baseline=harness.APP,
        ),
    ]
    if postgres:
        idle = harness.Result(OTHER_REFRESH, IDLE, idle_times)
        idle.note = f"the same refreshes with nothing else running; p99 {idle.p99_ms:.1f} ms"
        during = harness.Result(OTHER_REFRESH, DURING, during_times, baseline=IDLE)
        # The table shows the median and p95; the slowest refreshes are what the batches' locks cost.
        during.note = (
            f"{len(during_times)} refreshes of another client (own connection, /o/token/) while "
            f"the batches ran; p99 {during.p99_ms:.1f} ms, slowest {max(during_times) * 1000:.1f} ms"
        )
        results += [idle, during]
    return results
