"""Admin revocation at scale: one consent behind N offline token families.

Creates N devices (token families) with a live refresh token and access token
each, all under one consent, on a fresh test database; then, as a superuser
through Django's test client, runs the consents changelist action
"Revoke selected consents and their tokens": the first POST renders the
confirmation page (which counts the tokens), the second confirms. Prints the
time and number of queries of each request, and checks that all N refresh
tokens are revoked and all N access tokens expired afterwards (issue #3: "well
under a second on PostgreSQL", a bounded number of queries). Each round builds
its own consent and tokens; the table shows the median and the slowest round.

    python -m benchmarks.admin_revoke                       # SQLite in memory
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access \\
        python -m benchmarks.admin_revoke --tokens 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import statistics
import sys
import time
import uuid
from datetime import timedelta

CHANGELIST = "/admin/offline_access/consent/"
ACTION = "revoke_selected_consents"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="token families under the consent")
    parser.add_argument("--rounds", type=int, default=3, help="fresh consent and tokens per round")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    # DEBUG off, as in production and under Django's test runner: with it on, Django keeps
    # the SQL of the last 9,000 queries, which costs time and shows up as memory.
    setup_test_environment(debug=False)
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        rounds = [measure(args.tokens, number) for number in range(args.rounds)]
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    vendor = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"Admin action {ACTION}, {args.tokens} token families under one consent, {args.rounds} round(s), "
        f"database: {vendor}, Python {sys.version.split()[0]}"
    )
    print("| request | median ms | max ms | queries |")
    print("|---|---|---|---|")
    for request in ("confirmation page (counts)", "confirmed revocation"):
        times = [result[request][0] for result in rounds]
        queries = sorted({result[request][1] for result in rounds})
        print(
            f"| {request} | {statistics.median(times) * 1000:.1f} | {max(times) * 1000:.1f} "
            f"| {', '.join(map(str, queries))} |"
        )
    print(f"OK: every round revoked {args.tokens} refresh tokens and expired {args.tokens} access tokens.")
    return 0


def create_families(tokens: int, number: int):
    """A superuser, a user and a client; one active consent with ``tokens`` live families."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    from offline_access.models import Consent, OfflineTokenFamily
    from tests import factories

    AccessToken, RefreshToken = get_access_token_model(), get_refresh_token_model()
    admin = get_user_model().objects.filter(username="bench-admin").first() or factories.UserFactory(
        username="bench-admin", is_staff=True, is_superuser=True
    )
    user = factories.UserFactory(username=f"bench-user-{number}")
    application = factories.ApplicationFactory()
    consent = factories.ConsentFactory(user=user, application=application)
    now = timezone.now()
    family_ids = [uuid.uuid4() for _ in range(tokens)]
    OfflineTokenFamily.objects.bulk_create(
        OfflineTokenFamily(token_family=family, consent=consent, user=user, application=application)
        for family in family_ids
    )

    def token_fields() -> dict:
        value = secrets.token_urlsafe(30)
        return {"token": value, "token_checksum": hashlib.sha256(value.encode()).hexdigest()}

    access_tokens = AccessToken.objects.bulk_create(
        AccessToken(
            user=user,
            application=application,
            expires=now + timedelta(hours=1),
            scope="openid offline_access",
            **token_fields(),
        )
        for _ in range(tokens)
    )
    RefreshToken.objects.bulk_create(
        RefreshToken(
            user=user,
            application=application,
            access_token=access_token,
            token_family=family,
            **token_fields(),
        )
        for access_token, family in zip(access_tokens, family_ids, strict=True)
    )
    assert Consent.objects.filter(pk=consent.pk).with_usage().get().live_tokens == tokens
    return admin, consent


def measure(tokens: int, number: int) -> dict[str, tuple[float, int]]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    from offline_access.models import Consent

    admin, consent = create_families(tokens, number)
    client = Client()
    client.force_login(admin)
    client.get(CHANGELIST)  # warm up: templates, admin site, session
    selection = {"action": ACTION, "_selected_action": [consent.pk]}
    results = {}

    def timed(request, data, expected_status):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.post(CHANGELIST, data)
            elapsed = time.perf_counter() - start
        assert response.status_code == expected_status, (response.status_code, response.content[:500])
        results[request] = (elapsed, len(captured))
        return response

    page = timed("confirmation page (counts)", selection, 200)
    shown = (
        page.context["consent_count"],
        page.context["refresh_token_count"],
        page.context["access_token_count"],
    )
    assert shown == (1, tokens, tokens), shown
    timed("confirmed revocation", {**selection, "confirm": "yes", "reason": "benchmark"}, 302)

    consent.refresh_from_db()
    assert consent.status == Consent.Status.REVOKED, consent.status
    refresh_tokens = get_refresh_token_model().objects.filter(user=consent.user)
    assert refresh_tokens.count() == tokens
    assert refresh_tokens.filter(revoked__isnull=False).count() == tokens, (
        "some refresh tokens are still live"
    )
    access_tokens = get_access_token_model().objects.filter(user=consent.user)
    assert access_tokens.filter(expires__lte=consent.ended_at).count() == tokens, (
        "some access tokens still work"
    )
    # And the token endpoint agrees: a sample refresh token is refused.
    from tests.oauth import refresh

    request_logger = logging.getLogger("django.request")
    level, request_logger.level = request_logger.level, logging.ERROR  # the 400 is expected
    try:
        response = refresh(Client(), consent.application, refresh_tokens.order_by("?").first().token)
    finally:
        request_logger.setLevel(level)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.content
    return results


if __name__ == "__main__":
    sys.exit(main())
