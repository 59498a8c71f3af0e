"""The issuance policy (SPEC P1-P7) as a property over generated scenarios (issue 9, "Proof").

Hypothesis generates whole scenarios: the flow (authorization code, hybrid, implicit,
password grant, client credentials, device grant), the requested scopes, ``prompt``
(absent, valid, malformed), ``approval_prompt`` with or without a live token,
``skip_authorization``, the client's offline-access policy, an enduring or interactive
consent in any state, the user's Allow or Deny, a tampered or replayed consent form,
an inactive user, then a refresh and an account event (client barred, user deactivated,
password changed). Every step goes through the real endpoints with Django's test
client. The oracle, :func:`expected`, is written from SPEC's words and does not call
``offline_access.policy``.

Invariant checked on every example:

- no response is a 500 (the test client re-raises a view's exception as well);
- a refresh token exists (in the token response, and as a live ``RefreshToken`` row,
  counted with ``revoked IS NULL``) if and only if the oracle says so: ``offline_access``
  requested and granted with a consent on record (checked: an active ``Consent`` for
  the user and client at issue time), through a code-returning or device flow (or a
  password grant under an enduring consent, P5), for an allowed client and an active
  user; none ever travels through the browser (front channel);
- Deny never yields a code; an edited signed form or a form posted a second time never
  yields a (second) code;
- after a revocation event (bar, deactivation, password change) no live refresh token
  remains and refreshing the issued one gets ``invalid_grant``.

Settings: ``deadline=None``, ``print_blob=True``, ``max_examples`` from
``HYPOTHESIS_MAX_EXAMPLES`` (default 200), plus the fixed ``CORNERS`` (the edge of each
rule) on every run. Under CI (``CI`` set) or tox (``TOX_ENV_NAME`` set) the run is
derandomized: the same examples every run, so a CI failure reproduces anywhere with the
same command. Elsewhere examples are random and a failing one is saved in ``.hypothesis/``
(git-ignored) and replayed first on the next run.

Reproducing a failure: the failure report prints the falsifying ``Scenario(...)`` and a
``@reproduce_failure("<version>", b"...")`` line; paste that decorator above
``test_issuance_policy_holds_for_every_scenario``, or re-run locally (the saved example is
replayed first), or add the printed ``Scenario(...)`` to ``CORNERS`` to keep it as a
regression. The same derandomized examples as CI, and a longer local hunt::

    CI=1 .venv-tox/bin/tox -e py311-dj52-sqlite -- tests/test_policy_properties.py
    HYPOTHESIS_MAX_EXAMPLES=2000 python -m pytest -q tests/test_policy_properties.py

Each example runs inside ``transaction.atomic()`` rolled back at its end (and with the
cache cleared), so examples do not see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.core import signing
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from oauth2_provider.models import (
    get_access_token_model,
    get_device_grant_model,
    get_grant_model,
    get_refresh_token_model,
)

from offline_access import services
from offline_access.models import ClientPolicy, Consent, ConsentEvent

from . import factories
from .oauth import authorize_url, client_auth, exchange_code, refresh

# The example site serves these legacy grants on purpose: the rules must hold for them too.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The OAuth 2.0 implicit grant:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The OAuth 2.0 resource owner password:DeprecationWarning"),
]

AccessToken = get_access_token_model()
DeviceGrant = get_device_grant_model()
Grant = get_grant_model()
RefreshToken = get_refresh_token_model()

OFFLINE = "offline_access"
SCOPES = ("openid", "profile", "email", "read", OFFLINE)
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CONSENT_FORM_SALT = "offline_access.consent"  # offline_access.forms: what an attacker would re-sign with
USERNAME = "alice"
NEW_PASSWORD = "a-Fresh-passphrase-2931"

#: ``prompt`` as sent: None is absent; REPEATED sends ``prompt=consent`` twice.
REPEATED = ("consent", "consent")
VALID_PROMPTS = (None, "none", "consent", "login", "login consent")
MALFORMED_PROMPTS = ("select_account", "none consent", "consent bogus", "CONSENT", REPEATED)

FLOWS = ("code", "hybrid", "implicit", "password", "client_credentials", "device")
AUTHORIZE_FLOWS = ("code", "hybrid", "implicit")
RESPONSE_TYPES = {
    "code": ("code",),
    "hybrid": ("code id_token", "code token", "code id_token token"),
    "implicit": ("token", "id_token token"),
}
GRANT_TYPES = {
    "code": "authorization-code",
    "hybrid": "openid-hybrid",
    "implicit": "implicit",
    "password": "password",
    "client_credentials": "client-credentials",
    "device": DEVICE_CODE_GRANT,
}
CONSENTS = ("absent", "enduring_active", "enduring_expired", "enduring_revoked", "interactive_active")
#: edited: the signed value re-encoded with wider scopes and offline_via (signature kept);
#: fields: extra scope/prompt/offline_via/client_id fields posted next to the genuine value;
#: replay: the same form posted a second time, as Allow.
FORM_ATTACKS = ("none", "edited", "fields", "replay")
END_EVENTS = ("none", "bar", "deactivate", "password_change")
REVOCATION_EVENTS = ("bar", "deactivate", "password_change")


#: Under CI or tox (which sets TOX_ENV_NAME) the examples are derandomized: the same ones every run.
DETERMINISTIC = bool(os.environ.get("CI") or os.environ.get("TOX_ENV_NAME"))

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200")),
    deadline=None,  # one example is a dozen requests; PostgreSQL and a busy machine vary
    print_blob=True,
    derandomize=DETERMINISTIC,
    # Otherwise failing examples are kept in .hypothesis/ (git-ignored) and replayed first.
    **({"database": None} if DETERMINISTIC else {}),
    suppress_health_check=[HealthCheck.too_slow],
)


# Scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    flow: str
    response_type: str | None
    scopes: tuple[str, ...]
    prompt: str | tuple[str, ...] | None
    approval_prompt: str | None
    prior_live_token: bool
    skip_authorization: bool
    client_policy: str  # "default" (no row), "allowed", "barred" (after the consents), "barred_first"
    consent: str
    decision: str
    form_attack: str
    user_active: bool
    after_refresh: str  # "none", "keep", "narrow" (drops offline_access)
    end_event: str


def _often(value, *others, weight: int = 3):
    """``value`` ``weight`` times as likely as each of ``others``: scenarios that get as far as a token."""
    return st.sampled_from((value,) * weight + others)


@st.composite
def scenarios(draw) -> Scenario:
    flow = draw(st.sampled_from(FLOWS))
    response_type = draw(st.sampled_from(RESPONSE_TYPES[flow])) if flow in AUTHORIZE_FLOWS else None
    scopes = set(draw(st.lists(st.sampled_from(SCOPES[:-1]), unique=True)))
    if draw(_often(True, False, weight=2)):
        scopes.add(OFFLINE)
    if response_type and "id_token" in response_type.split() or flow == "hybrid":
        scopes.add("openid")  # OIDC Core 3.2/3.3: these response types are OpenID requests
    prompt = None
    if flow in AUTHORIZE_FLOWS:
        valid = st.sampled_from(VALID_PROMPTS)
        prompt = draw(st.one_of(valid, valid, valid, st.sampled_from(MALFORMED_PROMPTS)))
    return Scenario(
        flow=flow,
        response_type=response_type,
        scopes=tuple(scope for scope in SCOPES if scope in scopes),
        prompt=prompt,
        approval_prompt=draw(st.sampled_from((None, "auto", "force"))),
        prior_live_token=draw(st.booleans()),
        skip_authorization=draw(st.booleans()),
        client_policy=draw(_often("default", "allowed", "barred", "barred_first", weight=3)),
        consent=draw(st.sampled_from(CONSENTS)),
        decision=draw(_often("allow", "deny")),
        form_attack=draw(_often("none", *FORM_ATTACKS[1:])),
        user_active=draw(_often(True, False, weight=4)),
        after_refresh=draw(st.sampled_from(("none", "keep", "narrow"))),
        end_event=draw(st.sampled_from(END_EVENTS)),
    )


#: The scenario every corner below starts from: a consent screen with prompt=consent, Allow.
BASE = Scenario(
    flow="code",
    response_type="code",
    scopes=("openid", OFFLINE),
    prompt="consent",
    approval_prompt=None,
    prior_live_token=False,
    skip_authorization=False,
    client_policy="default",
    consent="absent",
    decision="allow",
    form_attack="none",
    user_active=True,
    after_refresh="none",
    end_event="none",
)


def corner(**changes) -> Scenario:
    return replace(BASE, **changes)


#: Run on every run before the generated ones: the edge of each rule, so that a rare
#: combination (password grant on a client barred before its enduring consent is about
#: 1 in 300 generated scenarios) is never left to chance.
CORNERS = (
    BASE,  # P2: prompt=consent and Allow
    corner(prompt=None, consent="enduring_active"),  # P2: enduring consent, screen without prompt=consent
    corner(
        prompt=None, consent="interactive_active"
    ),  # P2: only an enduring consent stands in for the screen
    corner(prompt=None, consent="enduring_expired"),
    corner(prompt=None, consent="enduring_revoked"),
    corner(consent="enduring_active", client_policy="barred_first"),  # P2: client barred
    corner(client_policy="barred"),
    corner(prompt="none", skip_authorization=True, consent="enduring_active"),  # P4
    corner(prompt="none", skip_authorization=True),
    corner(prompt="none"),  # P4: consent_required
    corner(prompt="none", approval_prompt="auto", prior_live_token=True),
    corner(prompt=None, approval_prompt="auto", prior_live_token=True),
    corner(skip_authorization=True, decision="deny"),  # prompt=consent shows the screen anyway
    corner(prompt="login consent"),
    corner(prompt="login", consent="enduring_active"),
    corner(prompt=REPEATED),
    corner(prompt="none consent", consent="enduring_active"),
    corner(form_attack="edited"),  # P3
    corner(form_attack="edited", scopes=("openid",)),
    corner(form_attack="fields", scopes=("openid", "read")),
    corner(form_attack="replay"),
    corner(form_attack="replay", decision="deny"),
    corner(scopes=(OFFLINE,)),
    corner(scopes=()),
    # Found by the property: offline_access alone, dropped, came back from the query string.
    corner(scopes=(OFFLINE,), prompt=None, consent="interactive_active"),
    corner(scopes=(OFFLINE,), prompt=None, skip_authorization=True, consent="interactive_active"),
    corner(scopes=(OFFLINE,), flow="hybrid", response_type="code token", prompt=None),
    corner(scopes=(OFFLINE,), flow="device", client_policy="barred_first"),
    corner(scopes=(OFFLINE,), flow="password", client_policy="barred_first", consent="enduring_active"),
    corner(scopes=(OFFLINE,), flow="client_credentials"),
    corner(flow="hybrid", response_type="code id_token token"),  # OIDC Core 11: via the code only
    corner(flow="hybrid", response_type="code token", prompt=None, consent="enduring_active"),
    corner(flow="implicit", response_type="id_token token"),
    corner(flow="implicit", response_type="token", scopes=("read", OFFLINE), consent="enduring_active"),
    corner(flow="password", consent="enduring_active"),  # P5
    corner(flow="password", consent="enduring_active", client_policy="barred_first"),
    corner(flow="password", consent="interactive_active"),
    corner(flow="password", consent="enduring_expired"),
    corner(flow="password", consent="enduring_active", user_active=False),
    corner(flow="client_credentials", scopes=("read", OFFLINE), consent="enduring_active"),
    corner(flow="device"),  # P7
    corner(flow="device", decision="deny"),
    corner(flow="device", form_attack="replay", decision="deny"),
    corner(flow="device", form_attack="fields", scopes=("openid",)),
    corner(flow="device", client_policy="barred_first"),
    corner(flow="device", user_active=False),
    corner(user_active=False, consent="enduring_active"),
    corner(after_refresh="keep", end_event="bar"),  # P6 and the account events
    corner(after_refresh="keep", end_event="deactivate"),
    corner(flow="device", end_event="password_change"),
    corner(flow="password", consent="enduring_active", after_refresh="narrow", end_event="deactivate"),
    corner(after_refresh="narrow"),
    corner(after_refresh="keep"),
)


# The oracle, from SPEC's words -------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    tokens: bool  # the flow ends in a token response (200 at /o/token/)
    refresh_token: bool  # ... carrying a refresh token


def _prompt_values(prompt) -> set[str] | None:
    """The prompt after the login round trip, or None when the request is malformed (400)."""
    if prompt is None:
        return set()
    if prompt in MALFORMED_PROMPTS:
        return None
    return set(prompt.split()) - {"login"}


def expected(s: Scenario) -> Expected:
    """What SPEC P1-P7 and OIDC Core 11 say this scenario must end in."""
    offline_possible = OFFLINE in s.scopes and not s.client_policy.startswith("barred")  # P2
    if s.flow == "client_credentials":
        return Expected(tokens=True, refresh_token=False)  # P5: no user, never
    if not s.user_active:
        return Expected(tokens=False, refresh_token=False)  # cannot sign in nor use a password
    if s.flow == "password":
        # P5: only under an active enduring consent.
        return Expected(tokens=True, refresh_token=offline_possible and s.consent == "enduring_active")
    if s.flow == "device":
        # P7: the approval page is the consent screen; Allow records the consent.
        allowed = s.decision == "allow"
        return Expected(tokens=allowed, refresh_token=allowed and offline_possible)
    prompt = _prompt_values(s.prompt)
    if prompt is None:
        return Expected(tokens=False, refresh_token=False)  # invalid_request, no code
    # DOT's own reasons to skip the screen; prompt=consent overrides them.
    approved_before = s.skip_authorization or (s.approval_prompt == "auto" and s.prior_live_token)
    if "consent" not in prompt and approved_before:
        screen, code = False, True
    elif "none" in prompt:
        screen, code = False, False  # P4: consent_required
    else:
        screen = True
        code = s.decision == "allow" and s.form_attack != "edited"
    if s.flow == "implicit":
        return Expected(tokens=False, refresh_token=False)  # no code, nothing at the token endpoint
    # P2: prompt=consent and Allow on the screen, or an active enduring consent.
    via_screen = "consent" in prompt and screen and code
    return Expected(
        tokens=code,
        refresh_token=code and offline_possible and (via_screen or s.consent == "enduring_active"),
    )


# Driving the endpoints -----------------------------------------------------------------


@dataclass
class Outcome:
    codes: int = 0  # authorization codes the browser received
    front_channel: dict | None = None
    token_response: dict | None = None


def _checked(response):
    assert response.status_code < 500, (response.status_code, response.content[:500])
    return response


def _redirect_to_client(response, application) -> dict[str, str] | None:
    """Query and fragment parameters of a redirect to the client, or None for any other answer."""
    if response.status_code != 302:
        return None
    location = response["Location"]
    if not application.redirect_uris or not location.startswith(application.redirect_uris.split()[0]):
        return None
    parsed = urlparse(location)
    params = {key: values[0] for key, values in parse_qs(parsed.query).items()}
    params.update({key: values[0] for key, values in parse_qs(parsed.fragment).items()})
    return params


def _login_redirect(response) -> str | None:
    if response.status_code == 302 and response["Location"].startswith("/accounts/login/"):
        return parse_qs(urlparse(response["Location"]).query)["next"][0]
    return None


def _edited(signed: str) -> str:
    """The signed form value with its payload widened and its original timestamp and signature kept."""
    original = signing.loads(signed, salt=CONSENT_FORM_SALT)
    payload = {**original, "scopes": list(SCOPES), "offline_via": "screen"}
    if payload == original:  # nothing left to widen: narrowing is an edit too
        payload["scopes"] = payload["scopes"][:-1]
    forged_value = signing.dumps(payload, salt=CONSENT_FORM_SALT, compress=True).rsplit(":", 2)[0]
    _value, timestamp, signature = signed.rsplit(":", 2)
    return f"{forged_value}:{timestamp}:{signature}"


def run_authorize(s: Scenario, application, browser: Client, outcome: Outcome) -> None:
    query = {"scope": " ".join(s.scopes) or None, "response_type": s.response_type}
    if s.flow == "implicit":
        query.update(code_challenge=None, code_challenge_method=None)
    if s.approval_prompt:
        query["approval_prompt"] = s.approval_prompt
    if isinstance(s.prompt, str):
        query["prompt"] = s.prompt
    url = authorize_url(application, **query)
    if isinstance(s.prompt, tuple):
        url += "&" + urlencode([("prompt", value) for value in s.prompt])
    response = _checked(browser.get(url))
    next_url = _login_redirect(response)
    if next_url is not None:  # prompt=login, or a session that is no longer valid (inactive user)
        login = _checked(
            browser.post(
                "/accounts/login/", {"username": USERNAME, "password": factories.PASSWORD, "next": next_url}
            )
        )
        if login.status_code != 302:
            return  # an inactive user cannot sign in
        url = next_url
        response = _checked(browser.get(url))
    if response.status_code == 200:
        response = post_consent_form(s, application, browser, url, response)
    params = _redirect_to_client(response, application)
    if params is None:
        return
    outcome.front_channel = params
    if "code" in params:
        outcome.codes += 1
        assert Grant.objects.count() == 1
        exchanged = _checked(exchange_code(Client(), application, params["code"]))
        assert exchanged.status_code == 200, exchanged.content
        outcome.token_response = exchanged.json()


def post_consent_form(s: Scenario, application, browser: Client, url: str, screen):
    signed = screen.context["form"].initial["request"]
    data = {"request": signed, "decision": s.decision}
    if s.form_attack == "edited":
        data["request"] = _edited(signed)
        response = _checked(browser.post(url, data))
        assert response.status_code == 400, response.status_code  # refused, no redirect, no code
        assert not Grant.objects.exists()
        return response
    if s.form_attack == "fields":
        data.update(scope=" ".join(SCOPES), prompt="consent", offline_via="screen", allow="true")
    response = _checked(browser.post(url, data))
    if s.decision == "deny":
        params = _redirect_to_client(response, application)
        assert params is not None and "code" not in params, response.get("Location")
        assert params["error"] == "access_denied"
    if s.form_attack == "replay":
        grants = Grant.objects.count()
        replay = _checked(browser.post(url, {"request": signed, "decision": "allow"}))
        assert replay.status_code == 400, (replay.status_code, replay.get("Location"))
        assert Grant.objects.count() == grants  # no second code
    return response


def form_post(client: Client, url: str, data: dict):
    return client.post(url, urlencode(data), content_type="application/x-www-form-urlencoded")


def run_device(s: Scenario, application, browser: Client, outcome: Outcome) -> None:
    start_data = {"client_id": application.client_id}
    if s.scopes:
        start_data["scope"] = " ".join(s.scopes)
    started = _checked(form_post(Client(), "/o/device-authorization/", start_data))
    assert started.status_code == 200, started.content
    started = started.json()
    entered = _checked(browser.post("/o/device/", {"user_code": started["user_code"]}))
    if _login_redirect(entered) is None and entered.status_code == 302:
        confirm_url = entered["Location"]
        screen = _checked(browser.get(confirm_url))
        assert screen.status_code == 200, screen.status_code
        data = {"decision": s.decision}
        if s.form_attack == "fields":
            data.update(scope=" ".join(SCOPES), offline_via="screen")
        decided = _checked(browser.post(confirm_url, data))
        assert decided.status_code == 302, decided.status_code
        if s.form_attack == "replay":
            again = _checked(browser.post(confirm_url, {"decision": "allow"}))
            assert again.status_code in (404, 409), again.status_code
    for attempt in range(2):  # the second poll shows the device code is redeemed once at most
        DeviceGrant.objects.filter(device_code=started["device_code"]).update(
            last_checked=timezone.now() - timedelta(seconds=60)
        )
        polled = _checked(
            form_post(
                Client(),
                "/o/token/",
                {
                    "grant_type": DEVICE_CODE_GRANT,
                    "device_code": started["device_code"],
                    "client_id": application.client_id,
                },
            )
        )
        if attempt == 0 and polled.status_code == 200:
            outcome.token_response = polled.json()
        else:
            assert polled.status_code == 400, polled.content
            assert "access_token" not in polled.json()


def run_direct(s: Scenario, application, outcome: Outcome) -> None:
    data = {"grant_type": s.flow, **client_auth(application)}
    if s.flow == "password":
        data.update(username=USERNAME, password=factories.PASSWORD)
    if s.scopes:
        data["scope"] = " ".join(s.scopes)
    response = _checked(Client().post("/o/token/", data))
    if response.status_code == 200:
        outcome.token_response = response.json()


# Setting the scene ------------------------------------------------------------------


def build(s: Scenario):
    user = factories.UserFactory(username=USERNAME, is_active=s.user_active)
    factory = factories.PublicApplicationFactory if s.flow == "device" else factories.ApplicationFactory
    application = factory(
        name="Property Client",
        authorization_grant_type=GRANT_TYPES[s.flow],
        skip_authorization=s.skip_authorization,
        **({"redirect_uris": ""} if s.flow == "device" else {}),
    )
    if s.prior_live_token:
        AccessToken.objects.create(
            user=user,
            application=application,
            token=secrets.token_urlsafe(24),
            scope=" ".join(SCOPES),
            expires=timezone.now() + timedelta(hours=1),
        )
    if s.client_policy == "barred_first":
        # Barred before the consents below: nothing revokes them, the bar must still hold.
        ClientPolicy.objects.create(application=application, allow_offline_access=False)
    if s.consent == "interactive_active":
        factories.ConsentFactory(user=user, application=application, scope="openid offline_access")
    elif s.consent == "enduring_expired":
        factories.EnduringConsentFactory(
            user=user, application=application, expires_at=timezone.now() - timedelta(seconds=1)
        )
    elif s.consent in ("enduring_active", "enduring_revoked"):
        consent, _created = services.grant_enduring_consent(
            user=user, application=application, reason="Signed service contract"
        )
        if s.consent == "enduring_revoked":
            services.revoke_consents(
                Consent.objects.filter(pk=consent.pk), reason="property test", via=ConsentEvent.Via.ADMIN
            )
    if s.client_policy in ("allowed", "barred"):
        # After the consents, as an administrator would bar a client that has some.
        ClientPolicy.objects.create(
            application=application, allow_offline_access=s.client_policy == "allowed"
        )
    return user, application


def live_refresh_tokens(user, application) -> int:
    return RefreshToken.objects.filter(user=user, application=application, revoked__isnull=True).count()


def end_with(event: str, user, application) -> None:
    if event == "bar":
        ClientPolicy.objects.update_or_create(
            application=application, defaults={"allow_offline_access": False}
        )
    elif event == "deactivate":
        user.is_active = False
        user.save()
    elif event == "password_change":
        user.set_password(NEW_PASSWORD)
        user.save()


# The property ---------------------------------------------------------------------------


def check_scenario(s: Scenario) -> None:
    note(repr(s))
    want = expected(s)
    note(repr(want))
    user, application = build(s)
    browser = Client()
    browser.force_login(user)
    outcome = Outcome()
    if s.flow in AUTHORIZE_FLOWS:
        run_authorize(s, application, browser, outcome)
    elif s.flow == "device":
        run_device(s, application, browser, outcome)
    else:
        run_direct(s, application, outcome)
    note(repr(outcome))

    # Deny never yields a code; a form posted twice or edited never a second one.
    assert outcome.codes <= 1
    if s.decision == "deny" and s.flow in AUTHORIZE_FLOWS and outcome.codes:
        # Only a flow that never showed the screen may end in a code (skip/auto approval).
        assert _prompt_values(s.prompt) is not None and "consent" not in _prompt_values(s.prompt)
    # No refresh token ever travels through the browser (OIDC Core 11, hybrid and implicit).
    front_channel = outcome.front_channel or {}
    assert "refresh_token" not in front_channel
    if "access_token" in front_channel:  # hybrid and implicit: a token the browser sees is not offline
        assert OFFLINE not in front_channel.get("scope", "").split(), front_channel

    body = outcome.token_response
    assert (body is not None) == want.tokens, (body, want)
    issued = body is not None and "refresh_token" in body
    assert issued == want.refresh_token, (body, want)
    assert live_refresh_tokens(user, application) == int(issued)
    if body is not None:
        # P1: offline_access in the granted scope exactly when a refresh token comes with it.
        assert (OFFLINE in str(body.get("scope", "")).split()) == issued, body
    event(f"{s.flow}: " + ("refresh token" if issued else "tokens" if body is not None else "no tokens"))
    if issued:
        # The consent on record at issue time (OIDC Core 11: consent before a refresh token).
        assert Consent.objects.active().filter(user=user, application=application).exists()

    refresh_token = body["refresh_token"] if issued else None
    seen = [refresh_token] if refresh_token else []  # every refresh token the client ever held
    api = Client()
    if refresh_token and s.after_refresh == "keep":
        response = _checked(refresh(api, application, refresh_token))
        assert response.status_code == 200, response.content
        refresh_token = response.json()["refresh_token"]
        seen.append(refresh_token)
        assert live_refresh_tokens(user, application) == 1
    elif refresh_token and s.after_refresh == "narrow":
        narrowed = [scope for scope in body["scope"].split() if scope != OFFLINE]
        if narrowed:
            response = _checked(refresh(api, application, refresh_token, scope=" ".join(narrowed)))
            assert response.status_code == 200, response.content
            assert "refresh_token" not in response.json()  # P6: dropping offline_access ends the family
            assert live_refresh_tokens(user, application) == 0
            refresh_token = None

    end_with(s.end_event, user, application)
    if s.end_event in REVOCATION_EVENTS:
        assert live_refresh_tokens(user, application) == 0
        # The latest token and its rotated predecessor (within the grace period a retry
        # with it would otherwise return the pair): all refused.
        for held in reversed(seen):
            response = _checked(refresh(api, application, held))
            assert response.status_code == 400, response.content
            assert response.json()["error"] == "invalid_grant"
    elif refresh_token:
        response = _checked(refresh(api, application, refresh_token))
        assert response.status_code == 200, response.content
        assert "refresh_token" in response.json()


class _Rollback(Exception):
    pass


def with_corners(test):
    for scenario in reversed(CORNERS):
        test = example(scenario=scenario)(test)
    return test


@pytest.mark.django_db
@PROPERTY_SETTINGS
@with_corners
@given(scenario=scenarios())
def test_issuance_policy_holds_for_every_scenario(scenario: Scenario) -> None:
    cache.clear()  # rate limits and anything else kept between requests
    try:
        with transaction.atomic():
            check_scenario(scenario)
            raise _Rollback
    except _Rollback:
        pass


# Regressions the property found -------------------------------------------------------------
#
# Requesting ``offline_access`` alone, where the policy drops it, left an empty scope list:
# oauthlib then falls back to the ``scope`` of the request URI (the authorization URL,
# also on the consent form's POST), which is ``offline_access`` again. The code carried
# the scope the screen had not shown, and with an earlier interactive consent still
# active its exchange returned a refresh token without prompt=consent (SPEC P2, P3).


def _offline_alone(browser: Client, application, **params) -> dict[str, str]:
    url = authorize_url(application, scope=OFFLINE, **params)
    response = browser.get(url)
    if response.status_code == 200:
        assert response.context["offline_access"] is False  # the screen announces no offline access
        response = browser.post(
            url, {"request": response.context["form"].initial["request"], "decision": "allow"}
        )
    params = _redirect_to_client(response, application)
    assert params is not None and "code" in params, response
    return params


@pytest.mark.django_db
def test_P2_offline_access_alone_without_prompt_consent_gets_no_refresh_token_despite_a_past_consent():
    user = factories.UserFactory(username=USERNAME)
    application = factories.ApplicationFactory()
    factories.ConsentFactory(user=user, application=application)  # an earlier prompt=consent approval
    browser = Client()
    browser.force_login(user)

    params = _offline_alone(browser, application)

    assert OFFLINE not in Grant.objects.get().scope.split()
    body = exchange_code(Client(), application, params["code"]).json()
    assert "refresh_token" not in body, body
    assert OFFLINE not in body["scope"].split()
    assert live_refresh_tokens(user, application) == 0


@pytest.mark.django_db
@pytest.mark.parametrize("skip_authorization", [False, True])
def test_P3_a_dropped_offline_access_does_not_come_back_from_the_query_string(skip_authorization):
    """Also without any consent: the code must not carry a scope the user was not shown."""
    user = factories.UserFactory(username=USERNAME)
    application = factories.ApplicationFactory(skip_authorization=skip_authorization)
    browser = Client()
    browser.force_login(user)

    _offline_alone(browser, application)

    assert Grant.objects.get().scope.split() == ["openid"]  # DOT's answer to no scope: the defaults


@pytest.mark.django_db
@pytest.mark.parametrize("skip_authorization", [False, True])
def test_P3_nothing_left_to_grant_is_invalid_scope_not_the_query_strings_scope(settings, skip_authorization):
    """A site whose only default scope is offline_access: nothing remains once it is dropped."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "DEFAULT_SCOPES": [OFFLINE]}
    user = factories.UserFactory(username=USERNAME)
    application = factories.ApplicationFactory(skip_authorization=skip_authorization)
    browser = Client()
    browser.force_login(user)
    url = authorize_url(application, scope=OFFLINE)
    response = browser.get(url)
    if response.status_code == 200:
        signed = response.context["form"].initial["request"]
        response = browser.post(url, {"request": signed, "decision": "allow"})

    params = _redirect_to_client(response, application)
    assert params is not None and params.get("error") == "invalid_scope", response
    assert not Grant.objects.exists()
