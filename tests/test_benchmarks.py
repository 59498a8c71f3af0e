"""The token workload runs in quick mode, and quick mode fails when the app needs more queries than DOT."""

from __future__ import annotations

import pytest

from benchmarks import harness, pins, token_endpoint


@pytest.mark.django_db(transaction=True)  # autocommit, as the harness and a web worker run
def test_token_workload_quick_rows_and_pins():
    results = token_endpoint.run(harness.Options(quick=True))

    rows = {(result.workload, result.side): result for result in results}
    assert set(rows) == {
        (token_endpoint.CODE_EXCHANGE, harness.PLAIN_DOT),
        (token_endpoint.CODE_EXCHANGE, harness.APP),
        (token_endpoint.REFRESH, harness.PLAIN_DOT),
        (token_endpoint.REFRESH, harness.APP),
        (token_endpoint.DPOP_REFRESH, token_endpoint.PUBLIC_BEARER),
        (token_endpoint.DPOP_REFRESH, token_endpoint.DPOP),
    }
    assert all(len(result.seconds) == token_endpoint.ROUNDS[1] for result in results)
    token_pins = {key: value for key, value in pins.QUERIES.items() if key[0].startswith("token:")}
    assert harness.regressions(results, token_pins) == []
    # The pins are exact on the database the harness counts on by default (SQLite, autocommit).
    from django.db import connection

    if connection.vendor == "sqlite":
        assert {key: rows[key].queries for key in token_pins} == token_pins
    for request in (token_endpoint.CODE_EXCHANGE, token_endpoint.REFRESH):
        assert rows[(request, harness.APP)].queries <= rows[(request, harness.PLAIN_DOT)].queries
        assert rows[(request, harness.APP)].max_queries_of == harness.PLAIN_DOT
    dpop = rows[(token_endpoint.DPOP_REFRESH, token_endpoint.DPOP)]
    assert dpop.baseline == token_endpoint.PUBLIC_BEARER
    # A DPoP-bound refresh costs one INSERT (the access token's binding) over a bearer refresh.
    assert dpop.queries == rows[(token_endpoint.DPOP_REFRESH, token_endpoint.PUBLIC_BEARER)].queries + 1
    assert "plain_dot_urls" in rows[(token_endpoint.CODE_EXCHANGE, harness.PLAIN_DOT)].note


def test_quick_mode_fails_when_the_app_needs_more_queries_than_plain_dot():
    def row(side, queries, **extra):
        return harness.Result(token_endpoint.REFRESH, side, [0.01], queries=queries, **extra)

    within = [row(harness.PLAIN_DOT, 23), row(harness.APP, 23, max_queries_of=harness.PLAIN_DOT)]
    over = [row(harness.PLAIN_DOT, 23), row(harness.APP, 24, max_queries_of=harness.PLAIN_DOT)]
    alone = [row(harness.APP, 20, max_queries_of=harness.PLAIN_DOT)]

    assert harness.regressions(within, {}) == []
    assert harness.regressions(over, {}) == [
        "token: refresh / offline_access: 24 queries, more than plain DOT (23)"
    ]
    assert harness.regressions(alone, {}) == [
        "token: refresh / offline_access: no plain DOT row to compare with"
    ]
