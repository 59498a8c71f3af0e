"""The whole-client revocation benchmark keeps running in quick mode, within its pinned queries."""

from __future__ import annotations

import pytest
from django.db import connection

from benchmarks import harness, pins, revoke_client


@pytest.mark.django_db(transaction=True)  # the other client's refresher thread reads committed rows
def test_revoke_client_benchmark_runs_in_quick_mode_within_its_pins():
    results = revoke_client.run(harness.Options(quick=True))

    rows = {(result.workload, result.side): result for result in results}
    batches = rows[(revoke_client.ONE_BATCH, harness.APP)]
    assert len(batches.seconds) == 5  # 50 consents, 10 per batch: the run was split
    assert batches.queries == pins.QUERIES[(revoke_client.ONE_BATCH, harness.APP)]
    assert not harness.regressions(results, harness.pins_of(pins.QUERIES, revoke_client.NAME))
    assert (revoke_client.WHOLE_CLIENT, harness.PLAIN_DOT) in rows
    measured_during = (revoke_client.OTHER_REFRESH, revoke_client.DURING) in rows
    assert measured_during == (connection.vendor == "postgresql")
