"""The consent screen: DOT's own authorization page against the app's, GET and both answers.

Each side is a logged-in user of a confidential client (authorization code with
PKCE S256) asking for ``openid offline_access`` with ``prompt=consent``, through
the site's real /o/authorize/:

- plain DOT (:data:`harness.PLAIN_DOT`): ``ROOT_URLCONF`` is
  :mod:`benchmarks.plain_dot_urls` and ``OAUTH2_VALIDATOR_CLASS`` DOT's stock
  ``OAuth2Validator``, every other setting unchanged. DOT's ``AuthorizationView``
  renders ``oauth2_provider/authorize.html`` (it ignores ``prompt=consent``); its
  form posts the hidden request fields back, plus ``allow`` for Allow.
- the app (:data:`harness.APP`): the example site's /o/authorize/, the app's
  consent screen; its form posts one signed ``request`` field and ``decision``.

Each round, per side: the screen (GET), Allow (POST); the screen, Allow again;
the screen, Deny; then the screen asked for with DOT's ``approval_prompt=auto``
(scope ``openid``, no ``prompt``), which first looks for a live access token of
the user's that covers the scopes (none does, so the screen shows). The browser
posts what the page it got holds (its hidden inputs), as a browser would;
parsing the page is not timed. On the app's side the first Allow records a new
interactive consent and the second renews it, so before each round the active
consent is revoked (untimed) and "Allow (POST)" is always a first grant. Plain
DOT records nothing: its two Allows are the same request.

Every side runs twice: for a user with an empty account, and for one with a
crowded account (:func:`tests.test_query_counts.crowd`: 30 other clients with an
active and a revoked consent each, 50 token families, 100 live access tokens,
decided device grants), the row the pins of tests/test_query_counts.py hold flat.
The four sides run in alternating rounds on the same database, after one untimed
warm-up round each.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from benchmarks import harness

NAME = "consent"

SCREEN = f"{NAME}: screen (GET)"
ALLOW = f"{NAME}: Allow (POST)"
ALLOW_AGAIN = f"{NAME}: Allow again (POST)"
DENY = f"{NAME}: Deny (POST)"
SCREEN_AUTO = f"{NAME}: screen, approval_prompt=auto (GET)"
#: Rows in the order they print.
ROWS = (SCREEN, ALLOW, ALLOW_AGAIN, DENY, SCREEN_AUTO)

CROWDED = "crowded account"
PLAIN_DOT_CROWDED = f"{harness.PLAIN_DOT}, {CROWDED}"
APP_CROWDED = f"{harness.APP}, {CROWDED}"

STOCK_VALIDATOR = "oauth2_provider.oauth2_validators.OAuth2Validator"
PLAIN_DOT_URLS = "benchmarks.plain_dot_urls"

#: What each side's notes say (printed under the table, once per side, on the screen row).
PLAIN_DOT_NOTE = (
    "DOT 3.4.1's AuthorizationView and oauth2_provider/authorize.html, stock OAuth2Validator "
    "(benchmarks.plain_dot_urls); prompt=consent is ignored; the form posts its hidden fields "
    "(+ allow=Authorize for Allow). It records no consent: both Allows are the same request."
)
APP_NOTE = (
    "the example site's /o/authorize/: prompt and offline_access policy, an enduring-consent "
    "EXISTS and the client's policy on GET, the request signed into a single-use form "
    "(nonce, rendered_at); on POST the nonce claimed, the interactive consent recorded "
    "(first Allow) or renewed (Allow again) with its event, a revocation since the page "
    "was shown refused, the code stored with its session's auth_time, all in one transaction; "
    "Deny uses up the form too; every redirect carries iss (RFC 9207)."
)
CROWD_NOTE = (
    "the same, for a user whose account holds 30 other clients' active and revoked consents, "
    "50 token families and 100 live access tokens (tests.test_query_counts.crowd)."
)


@dataclass
class Side:
    name: str
    #: The site serving it: (ROOT_URLCONF, OAUTH2_VALIDATOR_CLASS); None keeps the settings'.
    urlconf: str | None
    validator: str | None
    crowded: bool
    baseline: str | None
    note: str
    browser: object = None
    application: object = None
    user: object = None

    @property
    def is_app(self) -> bool:
        return self.urlconf is None


def sides() -> list[Side]:
    return [
        Side(harness.PLAIN_DOT, PLAIN_DOT_URLS, STOCK_VALIDATOR, False, None, PLAIN_DOT_NOTE),
        Side(harness.APP, None, None, False, None, APP_NOTE),
        Side(PLAIN_DOT_CROWDED, PLAIN_DOT_URLS, STOCK_VALIDATOR, True, None, CROWD_NOTE),
        Side(APP_CROWDED, None, None, True, PLAIN_DOT_CROWDED, CROWD_NOTE),
    ]


def run(options: harness.Options) -> list[harness.Result]:
    return measure(rounds=options.size(100, 2))


def measure(rounds: int) -> list[harness.Result]:
    """Time ``rounds`` rounds of every side (after one warm-up round each); one Result per row and side."""
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from tests import factories
    from tests.conftest import reset_oauthlib_cores
    from tests.test_query_counts import crowd

    all_sides = sides()
    for side in all_sides:
        side.user = factories.UserFactory()
        side.application = factories.ApplicationFactory()
        if side.crowded:
            crowd(side.user, side.application)
        side.browser = Client()
        side.browser.force_login(side.user)

    seconds = {(row, side.name): [] for row in ROWS for side in all_sides}
    queries = {(row, side.name): [] for row in ROWS for side in all_sides}
    recording = False

    def request(side: Side, row: str, call, *args):
        """One request of ``side`` through the test client; timed and counted once warmed up."""
        # Every request here runs inside a capture, which holds back Django's per-request
        # reset of the query log: without this the log fills (9,000) and captures count 0.
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = call(*args)
            elapsed = time.perf_counter() - start
        if recording:
            seconds[row, side.name].append(elapsed)
            queries[row, side.name].append(len(captured))
        return response

    names = [side.name for side in all_sides]
    by_name = {side.name: side for side in all_sides}
    try:
        for round_number in range(-1, rounds):  # round -1 warms every side up, untimed
            recording = round_number >= 0
            for name in alternating(names, max(round_number, 0)):
                side = by_name[name]
                with serving(side, reset_oauthlib_cores):
                    one_round(side, request)
    finally:
        reset_oauthlib_cores()

    results = []
    for row in ROWS:
        for side in all_sides:
            counts = queries[row, side.name]
            note = side.note if row == SCREEN else ""
            if min(counts) != max(counts):
                note = f"{note} Queries varied from {min(counts)} to {max(counts)}.".strip()
            results.append(
                harness.Result(
                    workload=row,
                    side=side.name,
                    seconds=seconds[row, side.name],
                    queries=max(counts),
                    note=note,
                    baseline=side.baseline,
                    extra={"queries_min": min(counts)},
                )
            )
    return results


def alternating(names: list[str], round_number: int) -> list[str]:
    """The sides' order in a round: rotated each round, reversed every other full rotation."""
    shift = round_number % len(names)
    order = names[shift:] + names[:shift]
    if round_number // len(names) % 2:
        order.reverse()
    return order


@contextmanager
def serving(side: Side, reset_oauthlib_cores):
    """The site of ``side``: plain DOT's URLs and validator, or the settings as they are."""
    from django.conf import settings
    from django.test import override_settings
    from oauth2_provider.views import AuthorizationView

    from offline_access.views import OfflineAccessAuthorizationView

    overrides = {}
    if not side.is_app:
        overrides = {
            "ROOT_URLCONF": side.urlconf,
            "OAUTH2_PROVIDER": {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": side.validator},
        }
    with override_settings(**overrides):
        # DOT caches one oauthlib server (holding a validator) per view class, inherited by
        # subclasses: drop them, and build this side's outside the timed requests.
        reset_oauthlib_cores()
        (OfflineAccessAuthorizationView if side.is_app else AuthorizationView).get_oauthlib_core()
        try:
            yield
        finally:
            reset_oauthlib_cores()


def one_round(side: Side, request) -> None:
    """Screen and Allow, screen and Allow again, screen and Deny; the approval_prompt=auto screen."""
    from tests.oauth import authorize_url

    url = authorize_url(side.application, prompt="consent")
    if side.is_app:
        forget_consent(side)
    for row, decision in ((ALLOW, "allow"), (ALLOW_AGAIN, "allow"), (DENY, "deny")):
        screen = request(side, SCREEN, side.browser.get, url)
        data = form_data(side, screen, decision)
        answer = request(side, row, side.browser.post, url, data)
        check_answer(answer, decision)
    # No live token of the user's covers "openid" (the crowd's are "read write"): the screen shows.
    auto = authorize_url(side.application, scope="openid", approval_prompt="auto")
    screen = request(side, SCREEN_AUTO, side.browser.get, auto)
    assert screen.status_code == 200, (side.name, screen.status_code, screen.content[:300])


def forget_consent(side: Side) -> None:
    """Revoke the user's active consent for the client, so that the next Allow records a new one."""
    from offline_access import services
    from offline_access.models import Consent, ConsentEvent

    services.revoke_consents(
        Consent.objects.active().filter(user=side.user, application=side.application),
        reason="benchmark: the next Allow is a first grant",
        via=ConsentEvent.Via.COMMAND,
    )


def form_data(side: Side, screen, decision: str) -> dict[str, str]:
    """What the browser posts for ``decision``: the page's hidden inputs and the button pressed."""
    from tests.oauth import hidden_inputs

    assert screen.status_code == 200, (side.name, screen.status_code, screen.content[:300])
    data = hidden_inputs(screen.content.decode())
    if side.is_app:
        assert screen.context["offline_access"] is True, side.name
        assert set(data) <= {"request", "csrfmiddlewaretoken"}, sorted(data)
        return {**data, "decision": decision}
    assert {"client_id", "redirect_uri", "scope", "code_challenge"} <= set(data), sorted(data)
    return {**data, "allow": "Authorize"} if decision == "allow" else data


def check_answer(answer, decision: str) -> None:
    from tests.oauth import redirect_params

    params = redirect_params(answer)
    if decision == "allow":
        assert "code" in params, params
    else:
        assert params.get("error") == "access_denied", params
