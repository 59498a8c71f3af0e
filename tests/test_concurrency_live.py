"""Races over real HTTP against a live, threaded server on PostgreSQL and MariaDB (issue 9, "Proof").

tests/test_concurrency.py pins single interleavings with Django's test client;
here many requests really run at once: pytest-django's ``live_server`` serves
each request on its own thread with its own database connection, and the
clients below are threads sending HTTP with ``requests``, released together by
a barrier. Every scenario repeats a bounded number of trials and then checks
the database itself (row counts only: tokens may be stored hashed).

- Parallel refreshes of one refresh token leave one live successor, one family
  and identical answers (the grace-period twin); never a 500.
- A revocation racing refresh chains leaves nothing live under the consent.
- Two approvals of the same consent at once leave one active record.
- A password change racing refresh chains leaves nothing live for the user.

SQLite has no row locks and serialises writers, so the module runs on a server
database: PostgreSQL and MariaDB (the postgres and mariadb tox envs, CI).
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection, connections
from django.db.models import Q
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import authorize_url, client_auth, exchange_code, get_code, hidden_inputs

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor not in ("postgresql", "mysql"),
        reason="races over a live server need row locks (the postgres and mariadb envs run them)",
    ),
]

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

#: Threads refreshing the same token at once.
RACERS = 8
#: Rounds of parallel refreshes of one token; each round refreshes the last round's successor.
REFRESH_ROUNDS = 4
#: Trials of each revocation race (consent revoked, password changed).
REVOCATION_TRIALS = 12
#: Refresh chains racing each revocation, and the longest chain.
CHAINS, CHAIN_LENGTH = 4, 6
#: Trials of two approvals of the same consent at once.
APPROVAL_TRIALS = 10
#: Seconds any one HTTP request may take.
HTTP_TIMEOUT = 20


# Clients ----------------------------------------------------------------------------------


def http(
    method: str, url: str, data: dict | None = None, browser: Browser | None = None
) -> requests.Response:
    # A new connection for every request, closed after it: a pooled keep-alive
    # connection the server has just closed would make a POST fail (it is not
    # retried), and no request thread of the live server outlives the test.
    response = requests.request(
        method,
        url,
        data=data,
        cookies=browser.cookies if browser else None,
        headers={"Connection": "close"},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    if browser is not None:
        browser.cookies.update(response.cookies)
    return response


def post(url: str, data: dict, browser: Browser | None = None) -> requests.Response:
    return http("POST", url, data, browser)


def refresh_over_http(base_url: str, application, refresh_token: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **client_auth(application)}
    return post(f"{base_url}/o/token/", data)


def race(*targets, timeout: float = 30) -> list:
    """Run each target in its own thread, released together; return their results in order.

    A target's exception is re-raised here. Threads that touch the database directly
    close their connections, so the transactional flush after the test is not blocked.
    """
    barrier = threading.Barrier(len(targets))
    outcomes: list[dict] = [{} for _ in targets]

    def run(target, outcome):
        try:
            barrier.wait(timeout=10)
            outcome["value"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=(target, outcome))
        for target, outcome in zip(targets, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
        assert not thread.is_alive(), "a racing thread did not finish"
    for outcome in outcomes:
        if "error" in outcome:
            raise outcome["error"]
    return [outcome["value"] for outcome in outcomes]


def answer(response: requests.Response) -> tuple[int, dict]:
    """Status and JSON body of a token response; a 500 (or any non-JSON answer) fails the test."""
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 400:
        assert body["error"] == "invalid_grant", body
    return response.status_code, body


def refresh_chain(base_url: str, application, refresh_token: str) -> list[tuple[int, dict]]:
    """A client refreshing again and again with each new token, until refused or CHAIN_LENGTH."""
    answers = []
    for _ in range(CHAIN_LENGTH):
        status, body = answer(refresh_over_http(base_url, application, refresh_token))
        answers.append((status, body))
        if status != 200:
            break
        refresh_token = body["refresh_token"]
    return answers


class Browser:
    """A real browser session of one user against the live server: just its cookies."""

    def __init__(self, user):
        client = Client()
        client.force_login(user)
        name = django_settings.SESSION_COOKIE_NAME
        self.cookies = requests.cookies.cookiejar_from_dict({name: client.cookies[name].value})

    def get(self, url: str) -> requests.Response:
        return http("GET", url, browser=self)


def offline_tokens(browser: Client, application) -> dict:
    """Consent with offline_access (prompt=consent) and exchange the code: the first token pair."""
    code = get_code(browser, application, prompt="consent")
    response = exchange_code(Client(), application, code)
    assert response.status_code == 200, response.content
    return response.json()


# What is live ----------------------------------------------------------------------------


def live_tokens(*, families=None, user=None) -> tuple[int, int]:
    """(unrevoked refresh tokens, unexpired access tokens) of some token families or of a user."""
    if families is not None:
        refresh_tokens = RefreshToken.objects.filter(token_family__in=families.values("token_family"))
        access_tokens = AccessToken.objects.filter(
            Q(pk__in=refresh_tokens.values("access_token_id"))
            | Q(source_refresh_token__in=refresh_tokens.values("pk"))
        )
    else:
        refresh_tokens = RefreshToken.objects.filter(user=user)
        access_tokens = AccessToken.objects.filter(user=user)
    return (
        refresh_tokens.filter(revoked__isnull=True).count(),
        access_tokens.filter(expires__gt=timezone.now()).count(),
    )


@pytest.fixture(autouse=True)
def no_lingering_server_threads(live_server):
    """Wait for the live server's request threads to end before the database is flushed."""
    running = set(threading.enumerate())
    yield
    for request_thread in set(threading.enumerate()) - running:
        request_thread.join(timeout=10)
        assert not request_thread.is_alive(), f"{request_thread.name} still serves a connection"


# 1. Parallel refreshes of one refresh token ---------------------------------------------


def test_parallel_refreshes_within_the_grace_period_get_one_successor(live_server, browser, application):
    """With the example site's 30 s grace period every racer gets the same pair back.

    Whoever loses the row lock on the presented token, or arrives after the
    rotation, is a retry within the grace period: DOT answers with the pair the
    winner minted. Never two live successors, never a second family.
    """
    assert django_settings.OAUTH2_PROVIDER["REFRESH_TOKEN_GRACE_PERIOD_SECONDS"] == 30
    token = offline_tokens(browser, application)["refresh_token"]
    for _ in range(REFRESH_ROUNDS):
        responses = race(
            *[lambda token=token: refresh_over_http(live_server.url, application, token)] * RACERS
        )
        answers = [answer(response) for response in responses]

        assert [status for status, _body in answers] == [200] * RACERS
        pairs = {(body["access_token"], body["refresh_token"]) for _status, body in answers}
        assert len(pairs) == 1, f"{len(pairs)} different successors of one refresh token"
        assert RefreshToken.objects.filter(revoked__isnull=True).count() == 1
        assert OfflineTokenFamily.objects.count() == 1
        assert OfflineTokenFamily.objects.get().ended_at is None
        ((_access, token),) = pairs
    # The first pair and one successor per round, nothing more.
    assert RefreshToken.objects.count() == 1 + REFRESH_ROUNDS
    assert answer(refresh_over_http(live_server.url, application, token))[0] == 200


def test_parallel_refreshes_without_a_grace_period(live_server, browser, application, dot_settings):
    """Grace period 0 with reuse protection (RFC 9700 4.14.2).

    A racer that presented the token before the winner's rotation committed
    waits for the winner's row lock and gets the winner's pair back (DOT's
    locked re-read finds the access token already minted from it): the same
    answer, not a second successor. A racer whose request is checked after the
    rotation committed presents a used-up token outside any grace period: that is
    exactly what a replayed stolen token looks like, and the server cannot tell
    which party is the thief, so it revokes the whole family (``invalid_grant``,
    and the winner's pair dies too). Hence: at most one live successor, and none
    once any racer was refused.
    """
    dot_settings(REFRESH_TOKEN_GRACE_PERIOD_SECONDS=0)
    replays = 0
    for _ in range(REFRESH_ROUNDS):
        token = offline_tokens(browser, application)["refresh_token"]
        family = OfflineTokenFamily.objects.filter(pk=OfflineTokenFamily.objects.latest("pk").pk)
        # Staggered by up to 140 ms, so that some racers usually arrive after the rotation.
        responses = race(
            *[
                lambda token=token, delay=0.02 * racer: (
                    time.sleep(delay),
                    refresh_over_http(live_server.url, application, token),
                )[1]
                for racer in range(RACERS)
            ]
        )
        answers = [answer(response) for response in responses]

        succeeded = [body for status, body in answers if status == 200]
        assert succeeded, "no racer got the successor"
        assert len({(body["access_token"], body["refresh_token"]) for body in succeeded}) == 1
        live_refresh, live_access = live_tokens(families=family)
        if len(succeeded) < RACERS:
            replays += 1
            assert (live_refresh, live_access) == (0, 0), "a replay outside the grace period left tokens"
        else:
            assert (live_refresh, live_access) == (1, 1)
        # Presenting the rotated token once more is a replay: the family ends.
        assert answer(refresh_over_http(live_server.url, application, token))[0] == 400
        assert live_tokens(families=family) == (0, 0)
    assert OfflineTokenFamily.objects.count() == REFRESH_ROUNDS
    print(f"grace period 0: a racer replayed the rotated token in {replays}/{REFRESH_ROUNDS} rounds")


# 2. A revocation racing refreshes --------------------------------------------------------


def _revocation_race(live_server, application, user, start, revoke) -> tuple[list[str], bool]:
    """Refresh chains from the same token race ``revoke()``.

    Returns every refresh token the chains were given, and whether the revocation
    cut a chain short (it landed between two of its refreshes: a real interleaving).
    """
    chains = [lambda: refresh_chain(live_server.url, application, start)] * CHAINS
    *answers, _ = race(*chains, revoke)
    tokens = {start}
    for chain in answers:
        tokens.update(body["refresh_token"] for status, body in chain if status == 200)
    cut_short = any(len(chain) > 1 and chain[-1][0] == 400 for chain in answers)
    return sorted(tokens), cut_short


def test_revocation_racing_refreshes_leaves_no_live_token(live_server, user, browser, application):
    """The connected-apps page's Revoke (a real POST with CSRF) while clients refresh."""
    interleaved = 0
    for trial in range(REVOCATION_TRIALS):
        start = offline_tokens(browser, application)["refresh_token"]
        consent = Consent.objects.get(user=user, application=application, status=Consent.Status.ACTIVE)
        families = OfflineTokenFamily.objects.filter(consent=consent)
        session = Browser(user)
        confirm_url = f"{live_server.url}/o/connected-apps/{consent.pk}/revoke/"
        page = session.get(confirm_url)
        assert page.status_code == 200, page.text[:300]
        form = hidden_inputs(page.text)

        def revoke(session=session, confirm_url=confirm_url, form=form, trial=trial):
            time.sleep(0.005 * (trial % 6))  # land at different points of the chains
            return post(confirm_url, form, session).status_code

        seen, cut_short = _revocation_race(live_server, application, user, start, revoke)
        interleaved += cut_short

        consent.refresh_from_db()
        assert consent.status == Consent.Status.REVOKED
        assert live_tokens(families=families) == (0, 0), f"trial {trial}: a token outlived the revocation"
        for token in seen:
            status, _body = answer(refresh_over_http(live_server.url, application, token))
            assert status == 400, f"trial {trial}: a refresh succeeded after the revocation"
    print(f"revocation landed inside a refresh chain in {interleaved}/{REVOCATION_TRIALS} trials")


# 3. Two approvals of the same consent at once --------------------------------------------


def test_two_approvals_at_once_leave_one_active_consent(live_server, application):
    """One user, two browser sessions, two consent forms rendered apart, Allow pressed together."""
    for trial in range(APPROVAL_TRIALS):
        user = factories.UserFactory(username=f"approver{trial}")
        url = live_server.url + authorize_url(application, prompt="consent")
        forms = []
        for _ in range(2):
            session = Browser(user)
            page = session.get(url)
            assert page.status_code == 200, page.text[:300]
            forms.append((session, {**hidden_inputs(page.text), "decision": "allow"}))

        responses = race(
            *[lambda s=session, data=data, url=url: post(url, data, s) for session, data in forms]
        )

        for response in responses:
            assert response.status_code == 302, (response.status_code, response.text[:300])
            assert "code=" in response.headers["Location"], response.headers["Location"]
        consents = Consent.objects.filter(user=user, application=application)
        assert consents.filter(status=Consent.Status.ACTIVE).count() == 1, f"trial {trial}"
        assert consents.count() == 1
        actions = sorted(ConsentEvent.objects.filter(consent__user=user).values_list("action", flat=True))
        assert actions == ["granted", "renewed"], f"trial {trial}: {actions}"


# 4. A password change racing refreshes ---------------------------------------------------


def test_password_change_racing_refreshes_leaves_no_live_token(live_server, application):
    """``set_password()`` + ``save()`` (what every password form does) while clients refresh."""
    interleaved = 0
    for trial in range(REVOCATION_TRIALS):
        user = factories.UserFactory(username=f"changer{trial}")
        browser = Client()
        browser.force_login(user)
        start = offline_tokens(browser, application)["refresh_token"]

        def change_password(user=user, trial=trial):
            time.sleep(0.005 * (trial % 6))
            account = type(user).objects.get(pk=user.pk)
            account.set_password(f"a new password {trial}")
            account.save()

        seen, cut_short = _revocation_race(live_server, application, user, start, change_password)
        interleaved += cut_short

        assert live_tokens(user=user) == (0, 0), f"trial {trial}: a token outlived the password change"
        assert not Consent.objects.active().filter(user=user).exists()
        for token in seen:
            status, _body = answer(refresh_over_http(live_server.url, application, token))
            assert status == 400, f"trial {trial}: a refresh succeeded after the password change"
    print(f"password change landed inside a refresh chain in {interleaved}/{REVOCATION_TRIALS} trials")
