"""Token endpoint: django-offline-access against plain django-oauth-toolkit.

Runs the same requests (authorization-code exchange, then a refresh with
rotation) through the example site's real /o/token/ endpoint, once with DOT's
stock validator and once with the offline-access validator, on a fresh test
database, and prints the median and 95th-percentile latency and the number of
queries of each. Exits non-zero when the app needs more than one query more
than plain DOT for either request (the budget in issue #2).

    python -m benchmarks.token_endpoint                 # SQLite in memory
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access \\
        python -m benchmarks.token_endpoint --iterations 300
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

STOCK = "oauth2_provider.oauth2_validators.OAuth2Validator"
OURS = "offline_access.validators.OfflineAccessValidator"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        results = measure({"plain DOT": STOCK, "offline_access": OURS}, args.iterations)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    vendor = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"Token endpoint, {args.iterations} iterations, database: {vendor}, Python {sys.version.split()[0]}"
    )
    print("| validator | request | median ms | p95 ms | queries |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        for request, (times, queries) in rows.items():
            print(f"| {name} | {request} | {median_ms(times):.2f} | {p95_ms(times):.2f} | {queries} |")
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


def measure(validators: dict[str, str], iterations: int) -> dict[str, dict[str, tuple[list[float], int]]]:
    """Time both validators in alternating rounds, so neither profits from a warmer database."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from oauth2_provider.views import TokenView

    from tests import factories
    from tests.conftest import reset_oauthlib_cores
    from tests.oauth import exchange_code, get_code, refresh

    sessions = {}
    for name in validators:
        user = factories.UserFactory()
        browser = Client()
        browser.force_login(user)
        sessions[name] = (browser, Client(), factories.ApplicationFactory())
    timings = {name: {"code exchange": [], "refresh": []} for name in validators}
    queries: dict[str, dict[str, int]] = {name: {} for name in validators}

    def timed(name, request, call, *args):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = call(*args)
            timings[name][request].append(time.perf_counter() - start)
        assert response.status_code == 200, response.content
        queries[name][request] = len(captured)
        return response

    for round_number in range(iterations):
        order = list(validators) if round_number % 2 == 0 else list(reversed(validators))
        for name in order:
            browser, api, application = sessions[name]
            provider = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": validators[name]}
            with override_settings(OAUTH2_PROVIDER=provider):
                reset_oauthlib_cores()
                TokenView.get_oauthlib_core()  # build DOT's server outside the timed request
                code = get_code(browser, application, prompt="consent")
                issued = timed(name, "code exchange", exchange_code, api, application, code)
                timed(name, "refresh", refresh, api, application, issued.json()["refresh_token"])
    reset_oauthlib_cores()
    return {
        name: {request: (timings[name][request], queries[name][request]) for request in timings[name]}
        for name in validators
    }


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def p95_ms(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] * 1000


if __name__ == "__main__":
    sys.exit(main())
