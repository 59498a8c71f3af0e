"""Token endpoint: django-offline-access against plain django-oauth-toolkit.

Runs the same requests (authorization-code exchange, then a refresh with
rotation) through the example site's real /o/token/ endpoint, once with DOT's
stock validator and once with the offline-access validator, on a fresh test
database, and prints the median and 95th-percentile latency and the number of
queries of each. Exits non-zero when the app needs more than one query more
than plain DOT for either request (the budget in issue #2).

The app also runs two public-client workloads that plain DOT has no counterpart
for (issue 11): a bearer code exchange and refresh, and the same with DPoP
(RFC 9449), the family bound to an EC P-256 key at the code exchange and every
refresh carrying a fresh proof. Each proof is built with jwcrypto *before* its
request is timed: building it is the client's cost, reported on its own line;
the timed figure is the server's. The DPoP refresh is compared with the app's
bearer refresh of the same public client and of the confidential client.

    python -m benchmarks.token_endpoint                 # SQLite in memory
    python -m benchmarks.token_endpoint --iterations 20 # a quick look
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access \\
        python -m benchmarks.token_endpoint --iterations 300
    REDIS_URL=redis://127.0.0.1:6379/0 python -m benchmarks.token_endpoint --replay-cache redis
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

STOCK = "oauth2_provider.oauth2_validators.OAuth2Validator"
OURS = "offline_access.validators.OfflineAccessValidator"


#: Rows of the app's own workloads (no plain-DOT counterpart), in the order printed.
PUBLIC_BEARER = "offline_access, public client"
PUBLIC_DPOP = "offline_access, public client, DPoP"
#: What the DPoP refresh is compared with: (label, workload) of the same app's bearer refreshes.
DPOP_BASELINES = (("public client, bearer", PUBLIC_BEARER), ("confidential client, bearer", "offline_access"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
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

    setup_test_environment()
    caches = settings.CACHES
    if args.replay_cache == "redis":
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        caches = {
            **caches,
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url},
        }
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        with override_settings(CACHES=caches):
            results, proof_times = measure({"plain DOT": STOCK, "offline_access": OURS}, args.iterations)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    vendor = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"Token endpoint, {args.iterations} iterations, database: {vendor}, "
        f"DPoP replay cache: {args.replay_cache}, Python {sys.version.split()[0]}"
    )
    print("| validator | request | median ms | p95 ms | queries |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        for request, (times, queries) in rows.items():
            print(f"| {name} | {request} | {median_ms(times):.2f} | {p95_ms(times):.2f} | {queries} |")
    print(
        f"DPoP proof built by the client (jwcrypto, ES256), not in the times above: "
        f"median {median_ms(proof_times):.2f} ms, p95 {p95_ms(proof_times):.2f} ms"
    )
    dpop_refresh = results[PUBLIC_DPOP]["refresh"]
    for label, workload in DPOP_BASELINES:
        baseline = results[workload]["refresh"]
        by_median = ratio(dpop_refresh[0], baseline[0], median_ms)
        by_p95 = ratio(dpop_refresh[0], baseline[0], p95_ms)
        print(
            f"DPoP refresh / bearer refresh ({label}): median {by_median:.2f}x, p95 {by_p95:.2f}x, "
            f"queries {dpop_refresh[1]} vs {baseline[1]} ({dpop_refresh[1] - baseline[1]:+d})"
        )
    over = [
        request
        for request in ("code exchange", "refresh")
        if results["offline_access"][request][1] > results["plain DOT"][request][1] + 1
    ]
    if over:
        print(f"FAIL: more than one extra query for: {', '.join(over)}")
        return 1
    print("OK: within one query of plain DOT for each request.")
    return 0


def measure(
    validators: dict[str, str], iterations: int
) -> tuple[dict[str, dict[str, tuple[list[float], int]]], list[float]]:
    """Time every workload in rounds whose order rotates, so none profits from a warmer database.

    Each validator in ``validators`` runs the confidential client's code exchange and
    refresh; the app's validator (:data:`OURS`) also runs a public client's, bearer and
    DPoP-bound. Returns the timings and query counts per workload and request, and
    the times the benchmark client spent building DPoP proofs (never inside a timed
    request).
    """
    from django.conf import settings
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from oauth2_provider.views import TokenView

    from tests import dpop, factories
    from tests.conftest import reset_oauthlib_cores
    from tests.oauth import exchange_code, get_code, refresh

    # workload name -> (validator class, application factory, DPoP key or None)
    workloads = {name: (path, factories.ApplicationFactory, None) for name, path in validators.items()}
    if OURS in validators.values():
        workloads[PUBLIC_BEARER] = (OURS, factories.PublicApplicationFactory, None)
        workloads[PUBLIC_DPOP] = (OURS, factories.PublicApplicationFactory, dpop.new_key("EC", crv="P-256"))
    sessions = {}
    for name, (_path, application_factory, _key) in workloads.items():
        user = factories.UserFactory()
        browser = Client()
        browser.force_login(user)
        sessions[name] = (browser, Client(), application_factory())
    timings: dict[str, dict[str, list[float]]] = {
        name: {"code exchange": [], "refresh": []} for name in workloads
    }
    queries: dict[str, dict[str, int]] = {name: {} for name in workloads}
    proof_times: list[float] = []

    def new_proof(key):
        start = time.perf_counter()
        value = dpop.proof(key)
        proof_times.append(time.perf_counter() - start)
        return value

    def timed(name, request, call, *args):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = call(*args)
            timings[name][request].append(time.perf_counter() - start)
        assert response.status_code == 200, response.content
        queries[name][request] = len(captured)
        return response

    names = list(workloads)
    for round_number in range(iterations):
        shift = round_number % len(names)
        order = names[shift:] + names[:shift]
        if round_number // len(names) % 2:
            order.reverse()
        for name in order:
            path, _factory, key = workloads[name]
            browser, api, application = sessions[name]
            provider = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": path}
            with override_settings(OAUTH2_PROVIDER=provider):
                reset_oauthlib_cores()
                TokenView.get_oauthlib_core()  # build DOT's server outside the timed request
                code = get_code(browser, application, prompt="consent")
                if key is None:
                    issued = timed(name, "code exchange", exchange_code, api, application, code)
                    timed(name, "refresh", refresh, api, application, issued.json()["refresh_token"])
                    continue
                proof = new_proof(key)
                issued = timed(name, "code exchange", dpop.exchange, api, application, code, proof)
                assert issued.json()["token_type"] == "DPoP", issued.content
                proof = new_proof(key)
                refreshed = timed(
                    name, "refresh", dpop.refresh, api, application, issued.json()["refresh_token"], proof
                )
                assert refreshed.json()["token_type"] == "DPoP", refreshed.content
    reset_oauthlib_cores()
    results = {
        name: {request: (timings[name][request], queries[name][request]) for request in timings[name]}
        for name in workloads
    }
    return results, proof_times


def ratio(times: list[float], baseline: list[float], statistic) -> float:
    return statistic(times) / statistic(baseline)


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def p95_ms(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] * 1000


if __name__ == "__main__":
    sys.exit(main())
