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
        results = {
            name: measure(validator, args.iterations)
            for name, validator in (("plain DOT", STOCK), ("offline_access", OURS))
        }
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


def measure(validator_path: str, iterations: int) -> dict[str, tuple[list[float], int]]:
    from django.conf import settings
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    from tests import factories
    from tests.conftest import reset_oauthlib_cores
    from tests.oauth import exchange_code, get_code, refresh

    provider = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": validator_path}
    with override_settings(OAUTH2_PROVIDER=provider):
        reset_oauthlib_cores()
        user = factories.UserFactory()
        application = factories.ApplicationFactory()
        browser, api = Client(), Client()
        browser.force_login(user)
        timings: dict[str, list[float]] = {"code exchange": [], "refresh": []}
        queries: dict[str, int] = {}
        for _ in range(iterations):
            code = get_code(browser, application, prompt="consent")
            with CaptureQueriesContext(connection) as captured:
                start = time.perf_counter()
                response = exchange_code(api, application, code)
                timings["code exchange"].append(time.perf_counter() - start)
            assert response.status_code == 200, response.content
            queries["code exchange"] = len(captured)
            with CaptureQueriesContext(connection) as captured:
                start = time.perf_counter()
                response = refresh(api, application, response.json()["refresh_token"])
                timings["refresh"].append(time.perf_counter() - start)
            assert response.status_code == 200, response.content
            queries["refresh"] = len(captured)
    reset_oauthlib_cores()
    return {request: (timings[request], queries[request]) for request in timings}


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def p95_ms(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] * 1000


if __name__ == "__main__":
    sys.exit(main())
