"""Token endpoint: django-offline-access against a plain django-oauth-toolkit site (issue 12).

Rows (``python -m benchmarks --only token``):

- ``token: code exchange`` and ``token: refresh`` (rotation, reuse protection, a
  30 s grace period, PKCE, an OIDC id_token: the example site's settings), for a
  confidential client, on two sides:

  - :data:`~benchmarks.harness.PLAIN_DOT`: a plain DOT 3.4.1 site, DOT's own URLs
    (``benchmarks.plain_dot_urls``: its AuthorizationView and TokenView) and its
    stock validator ``oauth2_provider.oauth2_validators.OAuth2Validator``, every
    other setting identical. The app stays installed in the process, so its
    receivers on the user model (post_init, post_save) run on both sides; no
    request reaches its views or validator.
  - :data:`~benchmarks.harness.APP`: the example site (``offline_access.urls``, the
    example validator), tokens hashed at rest.

  The app may not need more queries than plain DOT for either request: quick mode
  fails when it does (``Result.max_queries_of``), besides the pins in
  :mod:`benchmarks.pins`.
- ``token: DPoP refresh``: a public client's refresh bound to an EC P-256 key
  (RFC 9449), side :data:`DPOP`, compared with the same public client's bearer
  refresh, side :data:`PUBLIC_BEARER`. Each proof is built with jwcrypto *before*
  its request is timed: that is the client's cost (reported in the row's note);
  the timed figure is the server's.

Every side runs in each round, in an order that rotates and reverses, so none
profits from a warmer cache; the authorization step of each round is not timed.

    python -m benchmarks --only token                    # SQLite in memory, 200 rounds
    python -m benchmarks --quick --only token            # 3 rounds; fails on a query regression
    python -m benchmarks.token_endpoint --iterations 20  # this workload alone (same table)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access_bench python -m benchmarks --only token
    REDIS_URL=redis://127.0.0.1:6379/0 python -m benchmarks.token_endpoint --replay-cache redis
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext

from benchmarks import harness

NAME = "token"
CODE_EXCHANGE = f"{NAME}: code exchange"
REFRESH = f"{NAME}: refresh"
DPOP_REFRESH = f"{NAME}: DPoP refresh"

#: The public client's sides of the DPoP row: bearer (the baseline) and DPoP-bound.
PUBLIC_BEARER = f"{harness.APP}, public client"
DPOP = f"{harness.APP}, public client, DPoP"

#: Rounds at the documented size and in quick mode.
ROUNDS = (200, 3)

PLAIN_DOT_NOTE = (
    "a plain DOT 3.4.1 site: DOT's URLs (benchmarks.plain_dot_urls) and stock OAuth2Validator, "
    "every other setting identical; the app stays installed in the process (its user "
    "post_init/post_save receivers run for both sides)"
)


def run(options: harness.Options) -> list[harness.Result]:
    """Time every side in alternating rounds on the harness's database; one row per side and request."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse
    from oauth2_provider.views import TokenView

    from offline_access.device import OfflineAccessTokenView
    from tests import dpop, factories
    from tests.conftest import reset_oauthlib_cores
    from tests.oauth import exchange_code, get_code, plain_dot_code, plain_dot_site, refresh

    rounds = options.size(*ROUNDS)
    key = dpop.new_key("EC", crv="P-256")

    # side -> (site settings, view class serving /o/token/, application factory, authorize, DPoP key)
    sides = {
        harness.PLAIN_DOT: (plain_dot_site, TokenView, factories.ApplicationFactory, plain_dot_code, None),
        harness.APP: (nullcontext, OfflineAccessTokenView, factories.ApplicationFactory, get_code, None),
        PUBLIC_BEARER: (
            nullcontext,
            OfflineAccessTokenView,
            factories.PublicApplicationFactory,
            get_code,
            None,
        ),
        DPOP: (nullcontext, OfflineAccessTokenView, factories.PublicApplicationFactory, get_code, key),
    }
    sessions = {}
    for side, (_site, _view, application_factory, _authorize, _key) in sides.items():
        browser = Client()
        browser.force_login(factories.UserFactory())
        sessions[side] = (browser, Client(), application_factory())
    times: dict[tuple[str, str], list[float]] = {}
    queries: dict[tuple[str, str], set[int]] = {}
    proof_times: list[float] = []

    def timed(side, request, call, *args):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = call(*args)
            elapsed = time.perf_counter() - start
        assert response.status_code == 200, (side, request, response.content)
        times.setdefault((side, request), []).append(elapsed)
        queries.setdefault((side, request), set()).add(len(captured))
        return response.json()

    def new_proof():
        start = time.perf_counter()
        value = dpop.proof(key)
        proof_times.append(time.perf_counter() - start)
        return value

    names = list(sides)
    for number in range(rounds):
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        if number // len(names) % 2:
            order.reverse()
        for side in order:
            site, view, _factory, authorize, side_key = sides[side]
            browser, api, application = sessions[side]
            with site():
                reset_oauthlib_cores()
                # Built outside the timed request: DOT's server and validator, and the URL
                # resolver's reverse lookups, which a change of ROOT_URLCONF empties and DOT's
                # ID token needs (its issuer is reversed from the discovery URL).
                view.get_oauthlib_core()
                reverse("oauth2_provider:oidc-connect-discovery-info")
                code = authorize(browser, application, prompt="consent")
                if side_key is None:
                    issued = timed(side, "code exchange", exchange_code, api, application, code)
                    assert "refresh_token" in issued and "id_token" in issued, issued
                    refreshed = timed(side, "refresh", refresh, api, application, issued["refresh_token"])
                    assert refreshed["token_type"] == "Bearer", refreshed
                    continue
                issued = timed(side, "code exchange", dpop.exchange, api, application, code, new_proof())
                assert issued["token_type"] == "DPoP", issued
                refreshed = timed(
                    side, "refresh", dpop.refresh, api, application, issued["refresh_token"], new_proof()
                )
                assert refreshed["token_type"] == "DPoP", refreshed
    reset_oauthlib_cores()

    def result(workload, side, request, note="", **extra) -> harness.Result:
        counts = queries[(side, request)]
        if len(counts) > 1:
            note = f"{note}; queries varied: {sorted(counts)}".lstrip("; ")
        return harness.Result(workload, side, times[(side, request)], queries=max(counts), note=note, **extra)

    grace = settings.OAUTH2_PROVIDER.get("REFRESH_TOKEN_GRACE_PERIOD_SECONDS", 0)
    confidential = "confidential client, example settings (rotation, reuse protection, "
    confidential += f"{grace} s grace period, PKCE S256, openid id_token)"
    proof_note = (
        f"each proof built by the client (jwcrypto ES256) outside the timed request: "
        f"median {statistics.median(proof_times) * 1000:.2f} ms"
    )
    return [
        result(CODE_EXCHANGE, harness.PLAIN_DOT, "code exchange", PLAIN_DOT_NOTE),
        result(CODE_EXCHANGE, harness.APP, "code exchange", confidential, max_queries_of=harness.PLAIN_DOT),
        result(REFRESH, harness.PLAIN_DOT, "refresh"),
        result(REFRESH, harness.APP, "refresh", max_queries_of=harness.PLAIN_DOT),
        result(DPOP_REFRESH, PUBLIC_BEARER, "refresh", "the same public client's bearer refresh"),
        result(DPOP_REFRESH, DPOP, "refresh", proof_note, baseline=PUBLIC_BEARER),
    ]


def main(argv: list[str] | None = None) -> int:
    """This workload alone: ``python -m benchmarks --only token``, plus a choice of DPoP replay cache."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=ROUNDS[0], help="rounds (every side in each)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{ROUNDS[1]} rounds; fail on a query regression"
    )
    parser.add_argument(
        "--replay-cache",
        choices=("locmem", "redis"),
        default="locmem",
        help="cache remembering DPoP proof jtis: the test settings' local memory, or Django's "
        "RedisCache at REDIS_URL (default redis://127.0.0.1:6379/0), as a multi-worker site would use",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings
    from django.test.utils import setup_test_environment

    from benchmarks import pins

    # DEBUG off, as in production and under Django's test runner: with it on, Django keeps
    # the SQL of the last 9,000 queries, which costs time and shows up as memory.
    setup_test_environment(debug=False)
    caches = settings.CACHES
    if args.replay_cache == "redis":
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        caches = {
            **caches,
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url},
        }
    options = harness.Options(quick=args.quick, scale=args.iterations / ROUNDS[0])
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        database = f"{connection.vendor} {'.'.join(map(str, connection.get_database_version()))}"
        with override_settings(CACHES=caches):
            results = run(options)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(
        f"Token endpoint, {options.size(*ROUNDS)} rounds, {database}, DPoP replay cache: "
        f"{args.replay_cache}, Python {sys.version.split()[0]}"
    )
    print(harness.table(results))
    problems = harness.regressions(
        results, {key: value for key, value in pins.QUERIES.items() if key[0].startswith(f"{NAME}:")}
    )
    if problems:
        print("FAIL: query counts regressed:\n  " + "\n  ".join(problems))
        return 1
    print("OK: no pinned query count regressed; the app needs no more queries than plain DOT.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
