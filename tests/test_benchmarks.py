"""The token endpoint benchmark keeps running: two rounds of every workload, DPoP included."""

from __future__ import annotations

import pytest

from benchmarks import token_endpoint

pytestmark = pytest.mark.django_db


def test_token_endpoint_benchmark_measures_a_dpop_bound_refresh():
    results, proof_times = token_endpoint.measure(
        {"plain DOT": token_endpoint.STOCK, "offline_access": token_endpoint.OURS}, iterations=2
    )

    assert set(results) == {
        "plain DOT",
        "offline_access",
        token_endpoint.PUBLIC_BEARER,
        token_endpoint.PUBLIC_DPOP,
    }
    for rows in results.values():
        assert [len(times) for times, _queries in rows.values()] == [2, 2]
    # measure() asserts each DPoP answer is token_type DPoP; its refresh costs what
    # tests/test_query_counts.py pins: the binding INSERT and the expired-bindings DELETE.
    dpop_refresh_queries = results[token_endpoint.PUBLIC_DPOP]["refresh"][1]
    assert dpop_refresh_queries == results[token_endpoint.PUBLIC_BEARER]["refresh"][1] + 2
    # One proof per DPoP request (exchange and refresh), each built outside the timed request.
    assert len(proof_times) == 4
