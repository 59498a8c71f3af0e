"""The consent screen benchmark keeps running, and measures what tests/test_query_counts.py pins."""

from __future__ import annotations

import pytest

from benchmarks import consent_screen, harness, pins

from .test_query_counts import (
    APPROVAL_USER_LOCK_QUERIES,
    CONSENT_DENY_POST_QUERIES,
    CONSENT_POST_QUERIES,
    CONSENT_RENEWAL_POST_QUERIES,
    CONSENT_SCREEN_AUTO_QUERIES,
    CONSENT_SCREEN_QUERIES,
)

# Also tells pytest-django to create the test database the module fixture below uses.
pytestmark = pytest.mark.django_db

SIDES = (
    harness.PLAIN_DOT,
    harness.APP,
    consent_screen.PLAIN_DOT_CROWDED,
    consent_screen.APP_CROWDED,
)
APP_PINS = {
    consent_screen.SCREEN: CONSENT_SCREEN_QUERIES,
    consent_screen.ALLOW: CONSENT_POST_QUERIES + APPROVAL_USER_LOCK_QUERIES,
    consent_screen.ALLOW_AGAIN: CONSENT_RENEWAL_POST_QUERIES + APPROVAL_USER_LOCK_QUERIES,
    consent_screen.DENY: CONSENT_DENY_POST_QUERIES,
    consent_screen.SCREEN_AUTO: CONSENT_SCREEN_AUTO_QUERIES,
}


@pytest.fixture(scope="module")
def results(django_db_setup, django_db_blocker):
    # One quick run serves every test here (it takes seconds); what it creates is rolled back
    # at once. Inside that transaction the app's own is a savepoint, as in test_query_counts.
    with django_db_blocker.unblock():
        from django.db import transaction

        with transaction.atomic():
            rows = consent_screen.run(harness.Options(quick=True))
            transaction.set_rollback(True)
    return {(result.workload, result.side): result for result in rows}


def test_every_row_and_side_is_measured_in_every_round(results):
    rounds = harness.Options(quick=True).size(100, 2)
    assert set(results) == {(row, side) for row in consent_screen.ROWS for side in SIDES}
    # The screen is shown before each of the three answers.
    for (row, _side), result in results.items():
        assert len(result.seconds) == rounds * (3 if row == consent_screen.SCREEN else 1)


@pytest.mark.parametrize("row", consent_screen.ROWS)
def test_the_app_costs_the_same_queries_for_an_empty_and_a_crowded_account(results, row):
    empty, crowded = results[row, harness.APP], results[row, consent_screen.APP_CROWDED]
    assert empty.queries == crowded.queries == APP_PINS[row]
    # Every request of the row, not only the most expensive one.
    assert empty.extra["queries_min"] == crowded.extra["queries_min"] == APP_PINS[row]


def test_the_pins_are_the_query_count_tests_pins_and_hold(results):
    consent_pins = {key: value for key, value in pins.QUERIES.items() if key[0].startswith("consent:")}
    assert set(consent_pins) == set(results)
    for row, pinned in APP_PINS.items():
        assert consent_pins[row, harness.APP] == consent_pins[row, consent_screen.APP_CROWDED] == pinned
    assert harness.regressions(list(results.values()), consent_pins) == []


def test_plain_dot_records_no_consent_so_both_its_allows_cost_the_same(results):
    for side in (harness.PLAIN_DOT, consent_screen.PLAIN_DOT_CROWDED):
        allow, again = results[consent_screen.ALLOW, side], results[consent_screen.ALLOW_AGAIN, side]
        assert allow.queries == again.queries
