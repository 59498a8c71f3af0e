"""Every benchmark workload, django-offline-access against plain DOT, side by side in one run.

    python -m benchmarks                      # every workload, documented sizes, SQLite in memory
    python -m benchmarks --quick              # small sizes; exit 1 if a pinned query count regresses
    python -m benchmarks --only token         # workloads whose name starts with "token"
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access_bench python -m benchmarks

One fresh test database (Django's test-database machinery: ``test_`` + the name)
serves every workload; each workload creates its own users and clients in it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys

#: Workload modules in this package, in the order they run and print.
WORKLOADS = (
    "token_endpoint",
    "consent_screen",
    "revoke_client",
    "admin_changelists",
    "maintenance",
    "concurrent_refresh",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; fail on pinned query regressions")
    parser.add_argument("--only", action="append", default=[], help="run workloads starting with this")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the documented sizes")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    from benchmarks import harness, pins

    modules = [
        importlib.import_module(f"benchmarks.{name}")
        for name in WORKLOADS
        if not args.only or any(name.startswith(prefix) for prefix in args.only)
    ]
    options = harness.Options(quick=args.quick, scale=args.scale)
    # DEBUG off, as in production and under Django's test runner: with it on, Django keeps
    # the SQL of the last 9,000 queries, which costs time and shows up as memory.
    setup_test_environment(debug=False)
    old_name = connection.creation.create_test_db(verbosity=0)
    results: list[harness.Result] = []
    try:
        database = f"{connection.vendor} {'.'.join(map(str, connection.get_database_version()))}"
        for module in modules:
            print(f"running {module.NAME} ...", file=sys.stderr, flush=True)
            results.extend(module.run(options))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(
        f"benchmarks{' (quick)' if args.quick else ''}: {database}, Python {platform.python_version()}, "
        f"Django {django.get_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(harness.table(results))
    if args.quick:
        ran = {module.NAME for module in modules}
        problems = harness.regressions(results, harness.pins_of(pins.QUERIES, *ran))
        if problems:
            print("FAIL: query counts regressed:\n  " + "\n  ".join(problems))
            return 1
        print("OK: no pinned query count regressed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
