"""The concurrent-refresh benchmark keeps running: gunicorn -w 2 per site, quick rounds, a server database.

It starts both sites (plain DOT and the app) on this test database, so the rows it
seeds must be committed for the gunicorn workers to see them: a transactional test.
On SQLite (an in-memory test database no other process can open) the workload
measures nothing and says why; the PostgreSQL and MariaDB envs (tox -e
py311-dj52-postgres,py311-dj52-mariadb, CI) run the real thing.
"""

from __future__ import annotations

import sys

import pytest
from django.db import connection
from oauth2_provider.models import get_refresh_token_model

from benchmarks import concurrent_refresh, harness

pytestmark = pytest.mark.django_db(transaction=True)

server_database = pytest.mark.skipif(
    connection.vendor not in concurrent_refresh.SCHEMES,
    reason="gunicorn's workers need a server database (the postgres and mariadb envs)",
)


@server_database
def test_concurrent_refresh_measures_both_sites_with_every_refresh_answered():
    rows = concurrent_refresh.run(harness.Options(quick=True))

    assert [(row.workload, row.side) for row in rows] == [
        ("concurrent: refresh", harness.PLAIN_DOT),
        ("concurrent: refresh", harness.APP),
    ]
    for row in rows:
        # run() raises on any refresh that is not a 200 with a new refresh token, and on a
        # database that does not hold one rotation per refresh and one live token per chain.
        assert row.seconds and row.wall_seconds
        assert row.extra["requests"] == len(row.seconds)
        assert row.ops_per_second == pytest.approx(len(row.seconds) / row.wall_seconds)
        assert row.extra["throughput"] == pytest.approx(row.ops_per_second)
        assert 0 < row.extra["p50_ms"] <= row.extra["p95_ms"] <= row.extra["p99_ms"]
        assert f"p99 {row.extra['p99_ms']:.1f} ms" in row.note
        if sys.platform == "linux":  # read from /proc: the workers' own CPU per request
            assert row.extra["worker_cpu_ms"] > 0
    assert "x plain DOT's" in rows[1].note
    # Each site stored its tokens its own way: the app hashed, plain DOT in plaintext.
    tokens = get_refresh_token_model().objects.filter(application__client_id__startswith="concurrent-")
    app_tokens = tokens.filter(application__client_id__contains="-app_settings-")
    dot_tokens = tokens.filter(application__client_id__contains="-plain_dot_settings-")
    assert app_tokens.exists() and dot_tokens.exists()
    assert not app_tokens.exclude(token__startswith="h1$").exists()
    assert not dot_tokens.filter(token__startswith="h1$").exists()


@pytest.mark.skipif(connection.vendor in concurrent_refresh.SCHEMES, reason="the SQLite fallback")
def test_concurrent_refresh_on_sqlite_returns_no_rows_and_says_why(capsys):
    assert concurrent_refresh.run(harness.Options(quick=True)) == []
    assert "needs PostgreSQL or MySQL/MariaDB" in capsys.readouterr().err
