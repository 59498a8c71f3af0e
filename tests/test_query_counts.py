"""Pinned query counts on the hot paths (CONVENTIONS: Tests), and the cost against plain DOT.

The token endpoint is measured for the two requests that matter to this app: the
code exchange that issues an offline refresh token, and a refresh with rotation.
Each is pinned with a named constant and compared with the same request served
by a plain DOT site (DOT's own views and stock ``OAuth2Validator``, every other
setting the same): the app may not need more queries than plain DOT (issue 12).
DOT's own counts are pinned too, so that a DOT upgrade that changes them is noticed.

The counts are taken inside the test's transaction, where DOT's ``atomic`` blocks
cost a savepoint pair or nothing; ``python -m benchmarks --only token`` counts the
same requests in autocommit, as a web worker runs them (benchmarks/pins.py).
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from .conftest import reset_oauthlib_cores
from .oauth import (
    authorize_url,
    consent_form_data,
    exchange_code,
    get_code,
    plain_dot_code,
    plain_dot_site,
    refresh,
)

#: POST /o/token/ exchanging a code granted with offline_access (issues a refresh token).
#: Was 19. The code is read once with everything the exchange decides on (user, covering
#: consent, auth_time, DPoP facts) and DOT's redirect-URI, PKCE and nonce checks use that
#: row; the access token links the ID token this request saved instead of DOT loading it
#: back from its JWT (client by ``aud``, row by ``jti``); and DOT's token view does not
#: look the access token up again for ``app_authorized`` (issue 9). What is left: the
#: dispatcher's code lookup, client, ID token INSERT (savepoint pair), DOT's resource
#: check reading the code again, the pair's INSERTs, the family's INSERT, the code's DELETE.
CODE_EXCHANGE_QUERIES = 12
#: POST /o/token/ with a refresh token, rotation on (issues a new pair). Was 24: the user
#: comes with the token, the client is compared by id, the ID token is not read back.
#: With a grace period (the tests run the example site's 30 s) this includes the INSERT of
#: the sealed successor pair (issue 9), and the family's SELECT (consent, client policy).
#: The rest is DOT's rotation: locking the token and its access token, revoke() locking
#: and reading them again, the access token's DELETE and the token's UPDATE.
REFRESH_QUERIES = 20
#: The same two requests on a plain DOT 3.4.1 site (its views and stock validator).
DOT_CODE_EXCHANGE_QUERIES = 20
DOT_REFRESH_QUERIES = 23
#: POST /o/token/ polling with an approved device code (RFC 8628 3.4) granted
#: ``openid offline_access``: redeems the code and issues the pair and an id_token (issue 10).
#: Stock DOT 3.4.1 cannot serve this poll on oauthlib 4 (no validate_device_code), so
#: there is no stock figure to compare with.
DEVICE_POLL_QUERIES = 16
#: The same poll without ``openid``: no id_token. The difference (3) is the ID token's
#: INSERT in its savepoint pair; DOT loaded it back too (client, row) until issue 12.
DEVICE_POLL_WITHOUT_OPENID_QUERIES = 13
#: GET /o/authorize/ rendering the consent screen for a logged-in user (prompt=consent,
#: offline_access): session, user, application, client policy, EXISTS of an enduring consent.
CONSENT_SCREEN_QUERIES = 5
#: POST /o/authorize/ "Allow" with prompt=consent: the first consent is created, the code saved.
#: Includes the single-use form (delete expired form rows, claim the nonce in a savepoint),
#: the check for a revocation since the page was shown, and the savepoint that makes the
#: form, the consent and the code one unit (in a test's transaction; BEGIN/COMMIT otherwise).
#: Two more since the code carries its session's authentication time (OIDC auth_time): the
#: INSERT of that row and the indexed DELETE of rows whose codes have expired. The code
#: exchange reads it with the code (a subquery), so the token endpoint costs nothing more.
CONSENT_POST_QUERIES = 21
#: (Queries: session, user, application; one savepoint holding the form's DELETE, savepoint,
#: INSERT, release, the consent's savepoint, locking SELECT, savepoint, INSERT, release, INSERT
#: of its event, release, the revoked-since EXISTS, DOT's validator loading the application
#: again, the code's INSERT, the auth_time DELETE and INSERT, release.)
#: The same POST when an interactive consent exists already: it is renewed (UPDATE instead
#: of the INSERT and its savepoint pair).
CONSENT_RENEWAL_POST_QUERIES = 19
#: MySQL/MariaDB only: an approval (first or renewal) first locks the user's row
#: (offline_access.services._lock_or_create says why).
APPROVAL_USER_LOCK_QUERIES = 1 if connection.vendor == "mysql" else 0
#: MySQL/MariaDB only: a device approval locks the device grant's row by its key before its
#: conditional UPDATE (offline_access.services.decide_device_grant says why).
DEVICE_DECISION_LOCK_QUERIES = 1 if connection.vendor == "mysql" else 0
#: MySQL/MariaDB only: a revocation pass that finds live refresh tokens reads their keys before
#: locking or updating them by key (offline_access.services._lock_live_refresh_tokens says why).
LIVE_REFRESH_TOKENS_READ_QUERIES = 1 if connection.vendor == "mysql" else 0


@pytest.fixture(autouse=True)
def fresh_oauthlib_cores():
    reset_oauthlib_cores()
    yield
    reset_oauthlib_cores()


def count_queries(request) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as queries:
        response = request()
    return len(queries), response


def offline_tokens(browser, api, application) -> dict:
    code = get_code(browser, application, prompt="consent")
    response = exchange_code(api, application, code)
    assert response.status_code == 200, response.content
    return response.json()


# Token endpoint ----------------------------------------------------------------------------------


def test_code_exchange_query_count(browser, api, application, django_assert_num_queries):
    code = get_code(browser, application, prompt="consent")

    with django_assert_num_queries(CODE_EXCHANGE_QUERIES):
        response = exchange_code(api, application, code)

    assert response.status_code == 200, response.content
    assert "refresh_token" in response.json()
    assert "id_token" in response.json()


def test_refresh_query_count(browser, api, application, django_assert_num_queries):
    tokens = offline_tokens(browser, api, application)

    with django_assert_num_queries(REFRESH_QUERIES):
        response = refresh(api, application, tokens["refresh_token"])

    assert response.status_code == 200, response.content
    assert response.json()["refresh_token"] != tokens["refresh_token"]
    assert "id_token" in response.json()


def test_code_exchange_needs_no_more_queries_than_plain_dot(browser, api, application):
    code = get_code(browser, application, prompt="consent")
    ours, response = count_queries(lambda: exchange_code(api, application, code))
    assert response.status_code == 200, response.content
    with plain_dot_site():
        code = plain_dot_code(browser, application, prompt="consent")
        stock, response = count_queries(lambda: exchange_code(api, application, code))
    assert response.status_code == 200, response.content
    assert {"refresh_token", "id_token"} <= set(response.json())

    assert (ours, stock) == (CODE_EXCHANGE_QUERIES, DOT_CODE_EXCHANGE_QUERIES)
    assert ours <= stock


def test_refresh_needs_no_more_queries_than_plain_dot(browser, api, application):
    ours_tokens = offline_tokens(browser, api, application)
    with plain_dot_site():
        stock_tokens = exchange_code(
            api, application, plain_dot_code(browser, application, prompt="consent")
        ).json()

    ours, response = count_queries(lambda: refresh(api, application, ours_tokens["refresh_token"]))
    assert response.status_code == 200, response.content
    with plain_dot_site():
        stock, response = count_queries(lambda: refresh(api, application, stock_tokens["refresh_token"]))
    assert response.status_code == 200, response.content
    assert response.json()["refresh_token"] != stock_tokens["refresh_token"]

    assert (ours, stock) == (REFRESH_QUERIES, DOT_REFRESH_QUERIES)
    assert ours <= stock


def test_query_counts_do_not_grow_with_earlier_grants(browser, api, application, django_assert_num_queries):
    """Earlier consents, codes and token families of the same user do not add queries."""
    for _ in range(3):
        tokens = offline_tokens(browser, api, application)
        refresh(api, application, tokens["refresh_token"])
    code = get_code(browser, application, prompt="consent")

    with django_assert_num_queries(CODE_EXCHANGE_QUERIES):
        tokens = exchange_code(api, application, code).json()
    with django_assert_num_queries(REFRESH_QUERIES):
        response = refresh(api, application, tokens["refresh_token"])
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid offline_access", DEVICE_POLL_QUERIES),
        ("offline_access", DEVICE_POLL_WITHOUT_OPENID_QUERIES),
    ],
)
def test_device_poll_query_count(browser, api, cli, scope, expected, django_assert_num_queries):
    from .test_device import DEVICE_CODE_GRANT, approve, form_post, start, waited

    started = start(api, cli, scope=scope)
    approve(browser, started)
    waited(started["device_code"])

    with django_assert_num_queries(expected):
        response = form_post(
            api,
            "/o/token/",
            {
                "grant_type": DEVICE_CODE_GRANT,
                "device_code": started["device_code"],
                "client_id": cli.client_id,
            },
        )

    assert response.status_code == 200, response.content
    assert ("id_token" in response.json()) == ("openid" in scope.split())
    assert "refresh_token" in response.json()


# DPoP (RFC 9449): what a key-bound request costs over the same bearer request --------------------

#: The code exchange with a DPoP proof: the bearer exchange plus the access token's binding
#: (one INSERT). The family's key is a column of the family row the exchange inserts anyway;
#: the proof is checked without the database. Expired bindings are deleted by maintenance
#: (offline_access.dpop.delete_expired_bindings), no longer here (was + 2).
DPOP_CODE_EXCHANGE_QUERIES = CODE_EXCHANGE_QUERIES + 1
#: A refresh of a bound family with a proof of its key: the same one more than a bearer refresh.
DPOP_REFRESH_QUERIES = REFRESH_QUERIES + 1


def test_dpop_code_exchange_and_refresh_query_counts(
    browser, api, native_application, django_assert_num_queries
):
    from .dpop import exchange as dpop_exchange
    from .dpop import new_key, proof
    from .dpop import refresh as dpop_refresh

    key = new_key()
    code = get_code(browser, native_application, prompt="consent")
    with django_assert_num_queries(DPOP_CODE_EXCHANGE_QUERIES):
        response = dpop_exchange(api, native_application, code, proof(key))
    assert response.status_code == 200, response.content
    tokens = response.json()
    assert tokens["token_type"] == "DPoP"

    with django_assert_num_queries(DPOP_REFRESH_QUERIES):
        response = dpop_refresh(api, native_application, tokens["refresh_token"], proof(key))
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"


# Consent screen and device approval at scale (issue 12) --------------------------------------------
#
# Each page is measured twice: for a user with nothing else, and for the same kind of user
# with a crowded account (consents with many other clients, token families on this client
# and others, live access tokens, decided device grants). The count must be the same pin.

#: GET /o/authorize/?approval_prompt=auto (no prompt=consent) that still shows the screen:
#: session, user, application, client policy, and one query for the distinct scope strings
#: of the user's live access tokens for the client (DOT's approval_prompt=auto). The tokens
#: used to be loaded and checked one by one (75 rows for the crowded user; now one row);
#: the enduring-consent EXISTS of the prompt=consent screen is not needed (no offline_access).
CONSENT_SCREEN_AUTO_QUERIES = 5
#: POST /o/authorize/ "Deny": session, user, application; the single-use form in a savepoint
#: (DELETE of expired form rows, savepoint, INSERT of the nonce, release, release). DOT's
#: denial redirect needs no query.
CONSENT_DENY_POST_QUERIES = 9
#: GET of the device approval page (RFC 8628 3.3) after the code was entered: session, user,
#: the pending device grant (by its user code's stored hash), application, client policy.
DEVICE_APPROVAL_SCREEN_QUERIES = 5
#: POST "Allow" there, granting offline_access for the first time: the page's 5, then in one
#: savepoint the conditional UPDATE of the grant, the consent (savepoint, locking SELECT,
#: savepoint, INSERT, release, INSERT of its event, release) and the session's auth_time
#: (indexed DELETE of expired rows, INSERT), release.
DEVICE_APPROVAL_POST_QUERIES = 17

CROWD_CONSENTS = 30
CROWD_FAMILIES = 50
CROWD_LIVE_ACCESS_TOKENS = 50


def crowd(user, *clients) -> None:
    """Fill ``user``'s account without touching the consent ``clients`` are asked for.

    30 other clients with an active consent and a revoked one each; 50 token families
    (refresh and access token, family row), half on ``clients`` under an old revoked
    consent, half on the other clients; 50 more live access tokens per client in
    ``clients`` whose scope covers nothing asked for; decided device grants.
    """
    import secrets
    import uuid
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_device_grant_model, get_refresh_token_model

    from offline_access.models import Consent, OfflineTokenFamily

    from . import factories

    now = timezone.now()
    long_ago = now - timedelta(days=30)
    others = factories.ApplicationFactory.create_batch(CROWD_CONSENTS)
    consents = [factories.ConsentFactory(user=user, application=other) for other in others]
    for other in others:
        factories.ConsentFactory(
            user=user, application=other, status=Consent.Status.REVOKED, ended_at=long_ago
        )
    old = {
        client: factories.ConsentFactory(
            user=user, application=client, status=Consent.Status.REVOKED, ended_at=long_ago
        )
        for client in clients
    }
    access_model, refresh_model = get_access_token_model(), get_refresh_token_model()

    def live_access_token(application, scope):
        return access_model.objects.create(
            user=user,
            application=application,
            token=secrets.token_hex(32),
            expires=now + timedelta(hours=1),
            scope=scope,
        )

    for number in range(CROWD_FAMILIES):
        if number % 2:
            application, consent = others[number % len(others)], consents[number % len(others)]
        else:
            application = clients[number % len(clients)]
            consent = old[application]
        family = uuid.uuid4()
        refresh_model.objects.create(
            user=user,
            application=application,
            token=secrets.token_hex(32),
            access_token=live_access_token(application, "read write"),
            token_family=family,
        )
        OfflineTokenFamily.objects.create(
            token_family=family, consent=consent, user=user, application=application
        )
    for client in clients:
        for _ in range(CROWD_LIVE_ACCESS_TOKENS):
            live_access_token(client, "read write")
    device_model = get_device_grant_model()
    for number in range(10):
        device_model.objects.create(
            user=user,
            client_id=clients[-1].client_id,
            device_code=secrets.token_hex(32),
            user_code=secrets.token_hex(8),
            scope="openid offline_access",
            expires=now + timedelta(minutes=10),
            status=device_model.AUTHORIZED if number % 2 else device_model.DENIED,
        )


crowded = pytest.mark.parametrize("crowded", [False, True], ids=["alone", "crowded"])


@crowded
def test_consent_screen_query_count_is_flat(crowded, browser, user, application, django_assert_num_queries):
    if crowded:
        crowd(user, application)
    url = authorize_url(application, prompt="consent")

    with django_assert_num_queries(CONSENT_SCREEN_QUERIES):
        response = browser.get(url)

    assert response.status_code == 200
    assert response.context["offline_access"] is True


@crowded
def test_consent_screen_with_approval_prompt_auto_query_count_is_flat(
    crowded, browser, user, application, django_assert_num_queries
):
    """DOT's approval_prompt=auto asks whether a live token covers the scopes: one query, no token loaded."""
    from django.db.models.signals import post_init
    from oauth2_provider.models import get_access_token_model

    if crowded:
        crowd(user, application)
    url = authorize_url(application, scope="openid", approval_prompt="auto")
    loaded = []

    def count(sender, **kwargs):
        loaded.append(kwargs["instance"])

    post_init.connect(count, sender=get_access_token_model())
    try:
        with django_assert_num_queries(CONSENT_SCREEN_AUTO_QUERIES):
            response = browser.get(url)
    finally:
        post_init.disconnect(count, sender=get_access_token_model())

    assert response.status_code == 200  # no live token covers "openid": the screen
    assert loaded == []  # the tokens were not loaded to be checked in Python


@crowded
def test_consent_post_query_count_is_flat(crowded, browser, user, application, django_assert_num_queries):
    if crowded:
        crowd(user, application)
    url = authorize_url(application, prompt="consent")
    data = {**consent_form_data(browser.get(url)), "decision": "allow"}

    with django_assert_num_queries(CONSENT_POST_QUERIES + APPROVAL_USER_LOCK_QUERIES):
        response = browser.post(url, data)

    assert response.status_code == 302
    assert "code=" in response["Location"]


@crowded
def test_consent_renewal_post_query_count_is_flat(
    crowded, browser, user, application, django_assert_num_queries
):
    if crowded:
        crowd(user, application)
    get_code(browser, application, prompt="consent")
    url = authorize_url(application, prompt="consent")
    data = {**consent_form_data(browser.get(url)), "decision": "allow"}

    with django_assert_num_queries(CONSENT_RENEWAL_POST_QUERIES + APPROVAL_USER_LOCK_QUERIES):
        response = browser.post(url, data)

    assert response.status_code == 302
    assert "code=" in response["Location"]


@crowded
def test_consent_deny_post_query_count_is_flat(
    crowded, browser, user, application, django_assert_num_queries
):
    if crowded:
        crowd(user, application)
    url = authorize_url(application, prompt="consent")
    data = {**consent_form_data(browser.get(url)), "decision": "deny"}

    with django_assert_num_queries(CONSENT_DENY_POST_QUERIES):
        response = browser.post(url, data)

    assert response.status_code == 302
    assert "error=access_denied" in response["Location"]


@crowded
def test_device_approval_query_counts_are_flat(crowded, browser, api, user, cli, django_assert_num_queries):
    from offline_access.models import Consent

    from .test_device import enter_code, start

    if crowded:
        crowd(user, cli)
    started = start(api, cli)
    confirm_url = enter_code(browser, started["user_code"])

    with django_assert_num_queries(DEVICE_APPROVAL_SCREEN_QUERIES):
        screen = browser.get(confirm_url)
    assert screen.status_code == 200
    assert screen.context["offline_access"] is True

    with django_assert_num_queries(
        DEVICE_APPROVAL_POST_QUERIES + APPROVAL_USER_LOCK_QUERIES + DEVICE_DECISION_LOCK_QUERIES
    ):
        response = browser.post(confirm_url, {"decision": "allow"})
    assert response.status_code == 302
    assert Consent.objects.active().filter(user=user, application=cli).count() == 1
