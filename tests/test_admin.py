"""Django admin of offline access: screens, gated and audited actions, filters, secrecy, query counts.

Every screen is checked for an anonymous visitor (redirect to the admin login), a staff
member without the permission (403, or the action hidden and a direct POST refused) and
one with it (works), and every action for the state it leaves in the database and at the
real token endpoint. Confirmation pages are posted back the way a browser submits them:
the fields are read off the rendered form.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, get_refresh_token_model

from offline_access.models import ClientPolicy, Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import (
    exchange_code,
    get_code,
    login_required_middleware_enabled,
    refresh,
    stored,
    stored_checksum,
)
from .test_query_counts import LIVE_REFRESH_TOKENS_READ_QUERIES

User = get_user_model()
Application = get_application_model()
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

Via = ConsentEvent.Via
Action = ConsentEvent.Action
Status = Consent.Status
Kind = Consent.Kind

#: GET of the consents changelist (a superuser, so no permission queries): session, user,
#: the client filter's choices (an EXISTS per client, at most 100 clients), one bounded
#: count (at most 10,001 rows; on PostgreSQL with the planner's estimate of the table in the
#: same query), one page of rows (users, clients, live tokens and last use in the same
#: query; live tokens counted up to 101 a row). No second, unfiltered count, no date
#: hierarchy (its DISTINCT scanned every row). The same for 10 and 1,000 rows (issue 12).
CONSENT_CHANGELIST_QUERIES = 5
#: GET of the enduring consents changelist: built like the consents changelist.
ENDURING_CONSENT_CHANGELIST_QUERIES = 5
#: GET of the offline token families changelist (live families by default): session, user,
#: the client filter's choices, the bounded count (at most 1,001 live families: each is tested
#: for a live refresh token), one page of rows (users, clients, their policies, last refresh
#: and live tokens in the same query).
FAMILY_CHANGELIST_QUERIES = 5
#: GET of the client policies changelist: session, user, the two counts, one page of rows.
CLIENT_POLICY_CHANGELIST_QUERIES = 5
#: GET of one user's offline access overview: session, admin, the user, then for each of
#: its two lists (consents, devices) a bounded count and one page of 100 rows (clients and
#: usage included).
USER_OVERVIEW_QUERIES = 7
#: The confirmed POST of "revoke selected consents" for one consent, whatever the number of
#: token families (devices) behind it: session, admin, the changelist's client filter
#: choices and its one bounded count (issue 12: was two full counts), the client filter
#: choices again, the selected ids, then the
#: service's twelve queries (savepoint, lock the consents, update them, insert their events,
#: delete unexchanged codes, lock the live refresh tokens with their access tokens' keys,
#: revoke them, delete those access tokens, check none is left, expire access
#: tokens refreshed from the families' tokens, end the families, release the savepoint).
ADMIN_REVOKE_QUERIES = 18 + LIVE_REFRESH_TOKENS_READ_QUERIES

BATCH = 1000
REASON = "Laptop stolen, ticket SEC-4711"


# Helpers ---------------------------------------------------------------------------------------


def checksum(token: str) -> str:
    """DOT's lookup checksum of an issued token (of its keyed hash, issue 9)."""
    return stored_checksum(token)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def offline_tokens(user, application) -> dict:
    """The user approves the consent screen (prompt=consent); the client exchanges the code."""
    code = get_code(logged_in(user), application, prompt="consent")
    response = exchange_code(Client(), application, code)
    assert response.status_code == 200, response.content
    body = response.json()
    assert "refresh_token" in body, body
    return body


def assert_refresh_refused(application, refresh_token: str) -> None:
    response = refresh(Client(), application, refresh_token)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"


def assert_refresh_works(application, refresh_token: str) -> dict:
    response = refresh(Client(), application, refresh_token)
    assert response.status_code == 200, response.content
    body = response.json()
    assert "refresh_token" in body, body
    return body


def assert_access_token_dead(access_token: str) -> None:
    response = Client().get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")
    assert response.status_code == 401


def assert_access_token_alive(access_token: str) -> None:
    response = Client().get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")
    assert response.status_code == 200, response.content


def login_redirect(url: str) -> str:
    """Where an anonymous visitor of an admin ``url`` is sent: the admin's login page.

    Under Django's LoginRequiredMiddleware the middleware answers first, with the
    site's ``LOGIN_URL``: Django exempts only the admin's login view, so every other
    admin page is refused before the admin's own check (Django's documented
    behaviour). The visitor is still refused and sent to log in, only elsewhere.
    """
    if login_required_middleware_enabled():
        return f"{settings.LOGIN_URL}?next={url}"
    return f"{reverse('admin:login')}?next={url}"


def action_choices(response) -> set[str]:
    form = response.context["action_form"]  # None when no action is available at all
    return set() if form is None else {name for name, _label in form.fields["action"].choices if name}


def result_pks(response) -> set[int]:
    assert response.status_code == 200, response.status_code
    return {row.pk for row in response.context["cl"].result_list}


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def snapshot() -> tuple:
    """Everything an admin revocation may change, to prove that a step changed nothing."""
    return (
        sorted(Consent.objects.values_list("pk", "status", "ended_at", "ended_by", "end_reason")),
        ConsentEvent.objects.count(),
        sorted(RefreshToken.objects.values_list("pk", "revoked")),
        sorted(AccessToken.objects.values_list("pk", "expires")),
        sorted(OfflineTokenFamily.objects.values_list("pk", "ended_at")),
    )


class _Forms(HTMLParser):
    """The POST forms of a page with the values a browser would submit."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[list[tuple[str, str]]] = []
        self._select = None
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append([])
        elif not self.forms:
            return
        elif tag == "input":
            kind = (attrs.get("type") or "text").lower()
            if not attrs.get("name") or kind in {"submit", "button", "image", "reset", "file"}:
                return
            if kind in {"checkbox", "radio"} and "checked" not in attrs:
                return
            default = "on" if kind in {"checkbox", "radio"} else ""
            self.forms[-1].append((attrs["name"], attrs.get("value", default)))
        elif tag == "select":
            self._select = {"name": attrs.get("name"), "chosen": [], "first": None}
        elif tag == "option" and self._select is not None:
            value = attrs.get("value", "")
            if self._select["first"] is None:
                self._select["first"] = value
            if "selected" in attrs:
                self._select["chosen"].append(value)
        elif tag == "textarea":
            self._textarea = [attrs.get("name"), ""]

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1] += data

    def handle_endtag(self, tag):
        if tag == "select" and self._select is not None:
            select, self._select = self._select, None
            chosen = select["chosen"] or ([select["first"]] if select["first"] is not None else [])
            if select["name"]:
                self.forms[-1].extend((select["name"], value) for value in chosen)
        elif tag == "textarea" and self._textarea is not None:
            name, value = self._textarea
            self._textarea = None
            if name:
                # Browsers drop the newline that Django puts after <textarea>.
                self.forms[-1].append((name, value[1:] if value.startswith("\n") else value))


def form_data(response, containing: str) -> dict[str, list[str]]:
    """The fields of the page's form that has a field named ``containing``, as a browser posts them."""
    parser = _Forms()
    parser.feed(response.content.decode())
    for fields in parser.forms:
        if any(name == containing for name, _value in fields):
            data: dict[str, list[str]] = {}
            for name, value in fields:
                data.setdefault(name, []).append(value)
            return data
    raise AssertionError(f"no form with a field {containing!r}")


def confirm(client: Client, url: str, confirmation, reason: str = REASON):
    """Submit the confirmation page's form as a browser does, with a reason."""
    assert confirmation.status_code == 200, confirmation.status_code
    data = form_data(confirmation, "confirm")
    assert data["confirm"] == ["yes"]
    data["reason"] = [reason]
    return client.post(url, data)


def assert_summary(response, consents: int, refresh_tokens: int, access_tokens: int) -> None:
    """The confirmation page says how much it will revoke, in its context and in its text."""
    assert response.status_code == 200, response.status_code
    assert "offline_access/admin/confirm_revoke.html" in [t.name for t in response.templates]
    assert response.context["consent_count"] == consents
    assert response.context["refresh_token_count"] == refresh_tokens
    assert response.context["access_token_count"] == access_tokens
    html = response.content.decode()
    for count, singular in (
        (consents, "consent"),
        (refresh_tokens, "refresh token"),
        (access_tokens, "access token"),
    ):
        assert f"{count} {singular}{'' if count == 1 else 's'}</li>" in html, (count, singular)


def revoked_message(consents: int, refresh_tokens: int, access_tokens: int) -> str:
    return (
        f"Revoked {consents} consent(s), {refresh_tokens} refresh token(s) "
        f"and {access_tokens} access token(s)."
    )


def assert_revoked_by(consent: Consent, actor, reason: str = REASON) -> None:
    consent.refresh_from_db()
    assert consent.status == Status.REVOKED
    assert consent.ended_by == actor
    assert consent.end_reason == reason
    assert consent.ended_at is not None
    event = consent.events.get(action=Action.REVOKED)
    assert (event.actor, event.via, event.reason) == (actor, Via.ADMIN, reason)
    assert event.at == consent.ended_at


def assert_untouched(consent: Consent) -> None:
    consent.refresh_from_db()
    assert consent.status == Status.ACTIVE
    assert (consent.ended_at, consent.ended_by, consent.end_reason) == (None, None, "")
    assert not consent.events.exclude(action__in=[Action.GRANTED, Action.RENEWED]).exists()


def add_token_families(consent: Consent, count: int, *, user=None, application=None) -> list[tuple[str, str]]:
    """``count`` more offline token families under ``consent`` (or none), straight in the database.

    What a code exchange leaves behind: an access token, a refresh token bound to it and
    the family row. Returns the (refresh token, access token) values.
    """
    user = user or consent.user
    application = application or consent.application
    now = timezone.now()
    prefix = uuid.uuid4().hex
    refresh_values = [f"admin-refresh-{prefix}-{i}" for i in range(count)]
    access_values = [f"admin-access-{prefix}-{i}" for i in range(count)]
    families = [uuid.uuid4() for _ in range(count)]
    access_tokens = AccessToken.objects.bulk_create(
        [
            AccessToken(
                user=user,
                application=application,
                token=stored(value),
                token_checksum=checksum(value),
                expires=now + timedelta(minutes=10),
                scope="openid offline_access",
            )
            for value in access_values
        ],
        batch_size=BATCH,
    )
    RefreshToken.objects.bulk_create(
        [
            RefreshToken(
                user=user,
                application=application,
                token=stored(value),
                token_checksum=checksum(value),
                access_token=access_token,
                token_family=family,
            )
            for value, access_token, family in zip(refresh_values, access_tokens, families, strict=True)
        ],
        batch_size=BATCH,
    )
    OfflineTokenFamily.objects.bulk_create(
        [
            OfflineTokenFamily(token_family=family, user=user, application=application, consent=consent)
            for family in families
        ],
        batch_size=BATCH,
    )
    return list(zip(refresh_values, access_values, strict=True))


# Fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def other_application(db):
    return factories.ApplicationFactory(name="Backup Tool", client_id="backup-tool")


@pytest.fixture
def staff(db):
    """``staff("revoke_consent", ...)``: a logged-in staff member with exactly these permissions."""
    counter = iter(range(1000))

    def make(*codenames: str) -> Client:
        member = factories.UserFactory(username=f"staff{next(counter)}", is_staff=True)
        for codename in codenames:
            app_label, _, codename = codename.rpartition(".")
            member.user_permissions.add(
                Permission.objects.get(
                    codename=codename, content_type__app_label=app_label or "offline_access"
                )
            )
        client = logged_in(member)
        client.member = member
        return client

    return make


class Scene:
    """alice holds two devices on Calendar Sync and one on Backup Tool; mallory one on Calendar Sync."""

    def __init__(self, user, other_user, application, other_application):
        self.alice, self.mallory = user, other_user
        self.calendar, self.backup = application, other_application
        self.alice_phone = offline_tokens(user, application)
        self.alice_laptop = offline_tokens(user, application)
        self.alice_backup = offline_tokens(user, other_application)
        self.mallory_phone = offline_tokens(other_user, application)
        interactive = Consent.objects.filter(kind=Kind.INTERACTIVE)
        self.alice_calendar = interactive.get(user=user, application=application)
        self.alice_backup_consent = interactive.get(user=user, application=other_application)
        self.mallory_calendar = interactive.get(user=other_user, application=application)
        # An enduring consent of mallory for Backup Tool, with no tokens under it.
        self.enduring = factories.EnduringConsentFactory(user=other_user, application=other_application)

    def family(self, tokens: dict) -> OfflineTokenFamily:
        token = RefreshToken.objects.get(token_checksum=checksum(tokens["refresh_token"]))
        return OfflineTokenFamily.objects.get(token_family=token.token_family)


@pytest.fixture
def scene(user, other_user, application, other_application) -> Scene:
    return Scene(user, other_user, application, other_application)


# Screens: who may see them -----------------------------------------------------------------------

SCREENS = {
    # screen: permissions that let a staff member open it
    "consent changelist": ["view_consent"],
    "consent change page": ["view_consent"],
    "user overview": ["view_consent"],
    "enduring consent changelist": ["view_consent"],
    "enduring consent change page": ["view_consent"],
    "enduring consent add page": ["grant_enduring_consent"],
    "token family changelist": ["view_offlinetokenfamily"],
    "token family change page": ["view_offlinetokenfamily"],
    "client policy changelist": ["view_clientpolicy"],
    "application change page": ["oauth2_provider.change_application", "view_clientpolicy"],
}


def screen_url(screen: str, scene: Scene) -> str:
    family = scene.family(scene.alice_phone)
    return {
        "consent changelist": reverse("admin:offline_access_consent_changelist"),
        "consent change page": reverse("admin:offline_access_consent_change", args=[scene.alice_calendar.pk]),
        "user overview": reverse("admin:offline_access_consent_user", args=[scene.alice.pk]),
        "enduring consent changelist": reverse("admin:offline_access_enduringconsent_changelist"),
        "enduring consent change page": reverse(
            "admin:offline_access_enduringconsent_change", args=[scene.enduring.pk]
        ),
        "enduring consent add page": reverse("admin:offline_access_enduringconsent_add"),
        "token family changelist": reverse("admin:offline_access_offlinetokenfamily_changelist"),
        "token family change page": reverse(
            "admin:offline_access_offlinetokenfamily_change", args=[family.pk]
        ),
        "client policy changelist": reverse("admin:offline_access_clientpolicy_changelist"),
        "application change page": reverse(
            "admin:oauth2_provider_application_change", args=[scene.calendar.pk]
        ),
    }[screen]


@pytest.mark.parametrize("screen", SCREENS)
def test_admin_screen_redirects_anonymous_visitors_to_the_login(scene, screen):
    url = screen_url(screen, scene)
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == login_redirect(url)


@pytest.mark.parametrize("screen", SCREENS)
def test_admin_screen_refuses_staff_without_the_permission(scene, staff, screen):
    # The permissions of every other screen, never this one's.
    others = {
        perm for name, perms in SCREENS.items() for perm in perms if not set(perms) & set(SCREENS[screen])
    }
    response = staff(*sorted(others)).get(screen_url(screen, scene))
    assert response.status_code == 403


@pytest.mark.parametrize("screen", SCREENS)
def test_admin_screen_opens_for_staff_with_the_permission(scene, staff, screen):
    response = staff(*SCREENS[screen]).get(screen_url(screen, scene))
    assert response.status_code == 200


def test_consent_changelist_lists_every_consent_with_its_live_tokens(scene, admin_client):
    response = admin_client.get(reverse("admin:offline_access_consent_changelist"))
    assert result_pks(response) == set(Consent.objects.values_list("pk", flat=True))
    live = {row.pk: row.live_tokens for row in response.context["cl"].result_list}
    assert live == {
        scene.alice_calendar.pk: 2,
        scene.alice_backup_consent.pk: 1,
        scene.mallory_calendar.pk: 1,
        scene.enduring.pk: 0,
    }
    html = response.content.decode()
    assert reverse("admin:offline_access_consent_user", args=[scene.alice.pk]) in html


def test_consent_change_page_shows_the_event_history(scene, admin_client):
    response = admin_client.get(
        reverse("admin:offline_access_consent_change", args=[scene.alice_calendar.pk])
    )
    assert response.status_code == 200
    (events,) = response.context["inline_admin_formsets"]
    assert [event.action for event in events.formset.queryset] == [Action.GRANTED, Action.RENEWED]
    html = response.content.decode()
    assert "Consent screen" in html
    assert "Renewed" in html


def test_user_overview_lists_only_that_users_consents_and_devices(scene, admin_client):
    response = admin_client.get(reverse("admin:offline_access_consent_user", args=[scene.alice.pk]))
    assert response.status_code == 200
    assert {c.pk for c in response.context["consents"]} == {
        scene.alice_calendar.pk,
        scene.alice_backup_consent.pk,
    }
    assert {f.pk for f in response.context["families"]} == set(
        OfflineTokenFamily.objects.filter(user=scene.alice).values_list("pk", flat=True)
    )
    assert len(response.context["families"]) == 3


def test_user_admin_page_links_to_the_offline_access_overview(scene, admin_client):
    response = admin_client.get(reverse("admin:auth_user_change", args=[scene.alice.pk]))
    assert response.status_code == 200
    assert reverse("admin:offline_access_consent_user", args=[scene.alice.pk]) in response.content.decode()


def test_user_overview_of_an_unknown_user_is_404(db, admin_client):
    assert admin_client.get(reverse("admin:offline_access_consent_user", args=[987654])).status_code == 404


# Actions: permission gates ------------------------------------------------------------------------

CONSENT_ACTIONS = [
    "revoke_selected_consents",
    "revoke_everything_of_selected_users",
    "revoke_everything_of_selected_clients",
]
ACTIONS = [
    # (changelist, action, permissions without the needed one, the needed one)
    (model, action, ["view_consent", "revoke_token_family"], "revoke_consent")
    for model in ("consent", "enduringconsent")
    for action in CONSENT_ACTIONS
] + [
    (
        "offlinetokenfamily",
        "revoke_selected_families",
        ["view_offlinetokenfamily", "revoke_consent"],
        "revoke_token_family",
    ),
]


def selected_for(model: str, scene: Scene) -> int:
    if model == "consent":
        return scene.alice_calendar.pk
    if model == "enduringconsent":
        return scene.enduring.pk
    return scene.family(scene.alice_phone).pk


@pytest.mark.parametrize(("model", "action", "_perms", "_needed"), ACTIONS)
def test_admin_action_refused_to_anonymous_visitors(scene, model, action, _perms, _needed):
    url = reverse(f"admin:offline_access_{model}_changelist")
    before = snapshot()
    for data in (
        {"action": action, ACTION_CHECKBOX_NAME: [selected_for(model, scene)]},
        {"action": action, ACTION_CHECKBOX_NAME: [selected_for(model, scene)], "confirm": "yes"},
    ):
        response = Client().post(url, data)
        assert response.status_code == 302
        assert response["Location"] == login_redirect(url)
    assert snapshot() == before


@pytest.mark.parametrize(("model", "action", "perms", "_needed"), ACTIONS)
def test_admin_action_hidden_and_refused_without_the_permission(scene, staff, model, action, perms, _needed):
    client = staff(*perms)
    url = reverse(f"admin:offline_access_{model}_changelist")
    page = client.get(url)
    assert page.status_code == 200
    assert action not in action_choices(page)
    assert action not in page.content.decode()
    before = snapshot()

    selected = [selected_for(model, scene)]
    assert client.post(url, {"action": action, ACTION_CHECKBOX_NAME: selected}).status_code == 403
    confirmed = {"action": action, ACTION_CHECKBOX_NAME: selected, "confirm": "yes", "reason": REASON}
    assert client.post(url, confirmed).status_code == 403
    # The "index" form of the action POST (the changelist's own button) is refused too.
    assert client.post(url, {**confirmed, "index": "0"}).status_code == 403

    assert snapshot() == before
    assert_refresh_works(scene.calendar, scene.alice_phone["refresh_token"])


@pytest.mark.parametrize(("model", "action", "perms", "needed"), ACTIONS)
def test_admin_action_offered_with_the_permission(scene, staff, model, action, perms, needed):
    page = staff(*perms, needed).get(reverse(f"admin:offline_access_{model}_changelist"))
    assert action in action_choices(page)


@pytest.mark.parametrize("model", ["consent", "enduringconsent", "offlinetokenfamily"])
def test_admin_records_have_no_delete_action(scene, admin_client, model):
    page = admin_client.get(reverse(f"admin:offline_access_{model}_changelist"))
    assert page.status_code == 200
    assert "delete_selected" not in action_choices(page)


# Actions: what they do ------------------------------------------------------------------------------


def test_revoke_selected_consents_confirms_then_revokes_with_the_admin_and_reason(scene, staff):
    client = staff("view_consent", "revoke_consent")
    url = reverse("admin:offline_access_consent_changelist")
    before = snapshot()

    confirmation = client.post(
        url, {"action": "revoke_selected_consents", ACTION_CHECKBOX_NAME: [scene.alice_calendar.pk]}
    )
    assert_summary(confirmation, consents=1, refresh_tokens=2, access_tokens=2)
    assert snapshot() == before

    done = confirm(client, url, confirmation)
    assert done.status_code == 302
    assert done["Location"] == url
    assert messages_of(done) == [revoked_message(1, 2, 2)]

    assert_revoked_by(scene.alice_calendar, client.member)
    assert_untouched(scene.alice_backup_consent)
    assert_untouched(scene.mallory_calendar)
    assert not OfflineTokenFamily.objects.filter(consent=scene.alice_calendar, ended_at__isnull=True).exists()
    for tokens in (scene.alice_phone, scene.alice_laptop):
        assert_refresh_refused(scene.calendar, tokens["refresh_token"])
        assert_access_token_dead(tokens["access_token"])
    assert_access_token_alive(scene.alice_backup["access_token"])
    assert_refresh_works(scene.backup, scene.alice_backup["refresh_token"])
    assert_refresh_works(scene.calendar, scene.mallory_phone["refresh_token"])


def test_revoke_everything_of_selected_users_reaches_every_client_of_that_user(scene, staff):
    client = staff("view_consent", "revoke_consent")
    url = reverse("admin:offline_access_consent_changelist")
    before = snapshot()

    confirmation = client.post(
        url,
        {"action": "revoke_everything_of_selected_users", ACTION_CHECKBOX_NAME: [scene.alice_calendar.pk]},
    )
    assert_summary(confirmation, consents=2, refresh_tokens=3, access_tokens=3)
    assert snapshot() == before

    done = confirm(client, url, confirmation)
    assert done.status_code == 302
    assert messages_of(done) == [revoked_message(2, 3, 3)]

    assert_revoked_by(scene.alice_calendar, client.member)
    assert_revoked_by(scene.alice_backup_consent, client.member)
    assert_untouched(scene.mallory_calendar)
    assert_refresh_refused(scene.calendar, scene.alice_phone["refresh_token"])
    assert_refresh_refused(scene.calendar, scene.alice_laptop["refresh_token"])
    assert_refresh_refused(scene.backup, scene.alice_backup["refresh_token"])
    assert_access_token_dead(scene.alice_backup["access_token"])
    assert_access_token_alive(scene.mallory_phone["access_token"])
    assert_refresh_works(scene.calendar, scene.mallory_phone["refresh_token"])


def test_revoke_everything_of_selected_clients_reaches_every_user_of_that_client(scene, staff):
    client = staff("view_consent", "revoke_consent")
    url = reverse("admin:offline_access_consent_changelist")
    before = snapshot()

    confirmation = client.post(
        url,
        {"action": "revoke_everything_of_selected_clients", ACTION_CHECKBOX_NAME: [scene.alice_calendar.pk]},
    )
    assert_summary(confirmation, consents=2, refresh_tokens=3, access_tokens=3)
    assert snapshot() == before

    done = confirm(client, url, confirmation)
    assert done.status_code == 302
    assert messages_of(done) == [revoked_message(2, 3, 3)]

    assert_revoked_by(scene.alice_calendar, client.member)
    assert_revoked_by(scene.mallory_calendar, client.member)
    assert_untouched(scene.alice_backup_consent)
    assert_refresh_refused(scene.calendar, scene.alice_phone["refresh_token"])
    assert_refresh_refused(scene.calendar, scene.alice_laptop["refresh_token"])
    assert_refresh_refused(scene.calendar, scene.mallory_phone["refresh_token"])
    assert_access_token_dead(scene.mallory_phone["access_token"])
    assert_refresh_works(scene.backup, scene.alice_backup["refresh_token"])


def test_revoke_everything_of_selected_users_reaches_devices_without_a_consent(scene, staff):
    """A family left without a consent (ended elsewhere) still goes with "everything"."""
    orphan = scene.family(scene.alice_backup)
    OfflineTokenFamily.objects.filter(pk=orphan.pk).update(consent=None)
    client = staff("view_consent", "revoke_consent")
    url = reverse("admin:offline_access_consent_changelist")

    confirmation = client.post(
        url,
        {"action": "revoke_everything_of_selected_users", ACTION_CHECKBOX_NAME: [scene.alice_calendar.pk]},
    )
    assert_summary(confirmation, consents=2, refresh_tokens=3, access_tokens=3)
    assert confirm(client, url, confirmation).status_code == 302

    assert_refresh_refused(scene.backup, scene.alice_backup["refresh_token"])
    assert_refresh_works(scene.calendar, scene.mallory_phone["refresh_token"])


@pytest.mark.parametrize(
    "action", ["revoke_everything_of_selected_users", "revoke_everything_of_selected_clients"]
)
def test_revoke_everything_from_a_filtered_changelist_reaches_devices_without_a_consent(
    scene, admin_client, action
):
    """The changelist filtered on active consents: what the page announces is what is revoked."""
    laptop = scene.family(scene.alice_laptop)
    OfflineTokenFamily.objects.filter(pk=laptop.pk).update(consent=None)
    url = reverse("admin:offline_access_consent_changelist") + "?state=active"

    confirmation = admin_client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [scene.alice_calendar.pk]})
    assert_summary(confirmation, consents=2, refresh_tokens=3, access_tokens=3)
    done = confirm(admin_client, url, confirmation)

    assert done.status_code == 302
    laptop_token = RefreshToken.objects.get(token_checksum=checksum(scene.alice_laptop["refresh_token"]))
    assert laptop_token.revoked is not None
    assert_access_token_dead(scene.alice_laptop["access_token"])
    assert_refresh_refused(scene.calendar, scene.alice_laptop["refresh_token"])
    assert messages_of(done) == [revoked_message(2, 3, 3)]


@pytest.mark.parametrize(
    ("action", "past_expiry"),
    [
        ("revoke_everything_of_selected_users", "alice_backup_consent"),
        ("revoke_everything_of_selected_clients", "mallory_calendar"),
        ("user overview", "alice_backup_consent"),
    ],
)
def test_revoke_everything_confirmation_counts_what_is_then_revoked(scene, admin_client, action, past_expiry):
    """A consent still marked active but past its expiry: the page and the result must agree."""
    Consent.objects.filter(pk=getattr(scene, past_expiry).pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    if action == "user overview":
        url = reverse("admin:offline_access_consent_user", args=[scene.alice.pk])
        confirmation = admin_client.post(url)
    else:
        url = reverse("admin:offline_access_consent_changelist")
        confirmation = admin_client.post(
            url, {"action": action, ACTION_CHECKBOX_NAME: [scene.alice_calendar.pk]}
        )
    announced = confirmation.context["consent_count"]
    assert announced in (1, 2)  # whether a consent past its expiry counts is the app's choice...
    assert_summary(confirmation, consents=announced, refresh_tokens=3, access_tokens=3)

    done = confirm(admin_client, url, confirmation)

    assert messages_of(done) == [revoked_message(announced, 3, 3)]  # ...but the result must agree
    lapsed = getattr(scene, past_expiry)
    lapsed.refresh_from_db()
    assert lapsed.status in (Status.REVOKED, Status.EXPIRED)


def test_revoke_selected_families_ends_the_device_and_keeps_the_consent(scene, staff):
    client = staff("view_offlinetokenfamily", "revoke_token_family")
    url = reverse("admin:offline_access_offlinetokenfamily_changelist")
    phone = scene.family(scene.alice_phone)
    before = snapshot()

    confirmation = client.post(url, {"action": "revoke_selected_families", ACTION_CHECKBOX_NAME: [phone.pk]})
    assert_summary(confirmation, consents=0, refresh_tokens=1, access_tokens=1)
    assert snapshot() == before

    done = confirm(client, url, confirmation)
    assert done.status_code == 302
    assert done["Location"] == url
    assert messages_of(done) == [revoked_message(0, 1, 1)]

    assert_refresh_refused(scene.calendar, scene.alice_phone["refresh_token"])
    assert_access_token_dead(scene.alice_phone["access_token"])
    assert_refresh_works(scene.calendar, scene.alice_laptop["refresh_token"])
    assert_refresh_works(scene.calendar, scene.mallory_phone["refresh_token"])
    consent = scene.alice_calendar
    consent.refresh_from_db()
    assert consent.status == Status.ACTIVE
    assert consent.ended_by is None
    event = consent.events.get(action=Action.DEVICES_REVOKED)
    assert (event.actor, event.via, event.reason) == (client.member, Via.ADMIN, REASON)
    assert not scene.alice_backup_consent.events.filter(action=Action.DEVICES_REVOKED).exists()
    phone.refresh_from_db()
    assert phone.ended_at is not None


def test_revoke_selected_consents_with_no_reason_records_an_empty_reason(scene, admin_client, admin_user):
    url = reverse("admin:offline_access_consent_changelist")
    confirmation = admin_client.post(
        url, {"action": "revoke_selected_consents", ACTION_CHECKBOX_NAME: [scene.mallory_calendar.pk]}
    )
    assert confirm(admin_client, url, confirmation, reason="").status_code == 302
    assert_revoked_by(scene.mallory_calendar, admin_user, reason="")


def test_revoking_an_already_revoked_consent_changes_nothing(scene, admin_client):
    url = reverse("admin:offline_access_consent_changelist")
    data = {"action": "revoke_selected_consents", ACTION_CHECKBOX_NAME: [scene.alice_calendar.pk]}
    assert confirm(admin_client, url, admin_client.post(url, data)).status_code == 302
    before = snapshot()

    confirmation = admin_client.post(url, {**data})
    assert_summary(confirmation, consents=0, refresh_tokens=0, access_tokens=0)
    done = confirm(admin_client, url, confirmation, reason="again")
    assert done.status_code == 302
    assert messages_of(done) == [revoked_message(0, 0, 0)]
    assert snapshot() == before


def test_revoke_selected_families_across_all_pages(user, application, staff):
    """ "Select all" over more rows than one page: the confirmation must still go through."""
    consent = factories.ConsentFactory(user=user, application=application)
    tokens = add_token_families(consent, 1200)
    client = staff("view_offlinetokenfamily", "revoke_token_family")
    url = reverse("admin:offline_access_offlinetokenfamily_changelist")
    page = client.get(url)
    on_page = [row.pk for row in page.context["cl"].result_list]
    assert len(on_page) == page.context["cl"].list_per_page < 1200

    confirmation = client.post(
        url,
        {
            "action": "revoke_selected_families",
            "select_across": "1",
            "index": "0",
            ACTION_CHECKBOX_NAME: on_page,
        },
    )
    assert_summary(confirmation, consents=0, refresh_tokens=1200, access_tokens=1200)
    done = confirm(client, url, confirmation)

    assert done.status_code == 302, done.status_code
    assert not OfflineTokenFamily.objects.filter(ended_at__isnull=True).exists()
    assert_refresh_refused(application, tokens[-1][0])


# The user overview's "revoke everything" ------------------------------------------------------------


def test_user_overview_hides_revoke_and_refuses_it_without_the_permission(scene, staff):
    client = staff("view_consent", "revoke_token_family")
    url = reverse("admin:offline_access_consent_user", args=[scene.alice.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert page.context["may_revoke"] is False
    assert "Revoke all offline access" not in page.content.decode()
    before = snapshot()

    assert client.post(url).status_code == 403
    assert client.post(url, {"confirm": "yes", "reason": REASON}).status_code == 403
    assert snapshot() == before


def test_user_overview_revoke_refused_to_anonymous_visitors(scene):
    url = reverse("admin:offline_access_consent_user", args=[scene.alice.pk])
    before = snapshot()
    response = Client().post(url, {"confirm": "yes", "reason": REASON})
    assert response.status_code == 302
    assert response["Location"] == login_redirect(url)
    assert snapshot() == before


def test_user_overview_revokes_everything_of_the_user_after_confirmation(scene, staff):
    client = staff("view_consent", "revoke_consent")
    url = reverse("admin:offline_access_consent_user", args=[scene.alice.pk])
    page = client.get(url)
    assert "Revoke all offline access of alice" in page.content.decode()
    before = snapshot()

    confirmation = client.post(url)
    assert_summary(confirmation, consents=2, refresh_tokens=3, access_tokens=3)
    assert snapshot() == before

    done = confirm(client, url, confirmation)
    assert done.status_code == 302
    assert done["Location"] == url
    assert revoked_message(2, 3, 3) in messages_of(done)

    assert_revoked_by(scene.alice_calendar, client.member)
    assert_revoked_by(scene.alice_backup_consent, client.member)
    assert_untouched(scene.mallory_calendar)
    assert not OfflineTokenFamily.objects.filter(user=scene.alice, ended_at__isnull=True).exists()
    assert_refresh_refused(scene.calendar, scene.alice_phone["refresh_token"])
    assert_refresh_refused(scene.calendar, scene.alice_laptop["refresh_token"])
    assert_refresh_refused(scene.backup, scene.alice_backup["refresh_token"])
    assert_access_token_dead(scene.alice_laptop["access_token"])
    assert_refresh_works(scene.calendar, scene.mallory_phone["refresh_token"])


# Enduring consents ------------------------------------------------------------------------------------


def enduring_form(user, application, reason="Signed service contract #42", expires_at=None) -> dict:
    data = {"user": str(user.pk), "application": str(application.pk), "reason": reason}
    if expires_at is not None:
        data["expires_at_0"] = expires_at.strftime("%Y-%m-%d")
        data["expires_at_1"] = expires_at.strftime("%H:%M:%S")
    return data


def test_enduring_consent_grant_refused_to_anonymous_visitors(user, application):
    url = reverse("admin:offline_access_enduringconsent_add")
    response = Client().post(url, enduring_form(user, application))
    assert response.status_code == 302
    assert response["Location"] == login_redirect(url)
    assert not Consent.objects.exists()


def test_enduring_consent_grant_refused_without_the_permission(user, application, staff):
    client = staff("view_consent", "revoke_consent")
    changelist = client.get(reverse("admin:offline_access_enduringconsent_changelist"))
    assert changelist.status_code == 200
    assert changelist.context["has_add_permission"] is False
    assert reverse("admin:offline_access_enduringconsent_add") not in changelist.content.decode()
    response = client.post(
        reverse("admin:offline_access_enduringconsent_add"), enduring_form(user, application)
    )
    assert response.status_code == 403
    assert not Consent.objects.exists()


def test_enduring_consent_granted_from_admin_lets_offline_access_through(user, application, staff):
    # Without a consent, a code flow without prompt=consent gets no refresh token.
    body = exchange_code(Client(), application, get_code(logged_in(user), application)).json()
    assert "refresh_token" not in body

    client = staff("view_consent", "grant_enduring_consent")
    url = reverse("admin:offline_access_enduringconsent_add")
    page = client.get(url)
    assert page.status_code == 200
    assert {"user", "application", "reason", "expires_at"} <= set(page.context["adminform"].form.fields)
    expires_at = (timezone.now() + timedelta(days=90)).replace(microsecond=0)
    response = client.post(url, enduring_form(user, application, expires_at=expires_at))

    assert response.status_code == 302, response.content
    consent = Consent.objects.get()
    assert consent.kind == Kind.ENDURING
    assert consent.status == Status.ACTIVE
    assert (consent.user, consent.application) == (user, application)
    assert consent.granted_by == client.member
    assert consent.reason == "Signed service contract #42"
    assert consent.expires_at == expires_at
    event = consent.events.get()
    assert (event.action, event.actor, event.via, event.reason) == (
        Action.GRANTED,
        client.member,
        Via.ADMIN,
        "Signed service contract #42",
    )
    body = exchange_code(Client(), application, get_code(logged_in(user), application)).json()
    assert "offline_access" in body["scope"].split()
    assert_refresh_works(application, body["refresh_token"])


def test_enduring_consent_needs_a_reason(user, application, admin_client):
    response = admin_client.post(
        reverse("admin:offline_access_enduringconsent_add"), enduring_form(user, application, reason="")
    )
    assert response.status_code == 200
    assert "reason" in response.context["adminform"].form.errors
    assert not Consent.objects.exists()


def test_enduring_consent_expiry_must_be_in_the_future(user, application, admin_client):
    response = admin_client.post(
        reverse("admin:offline_access_enduringconsent_add"),
        enduring_form(user, application, expires_at=timezone.now() - timedelta(days=1)),
    )
    assert response.status_code == 200
    assert "expires_at" in response.context["adminform"].form.errors
    assert not Consent.objects.exists()


def test_enduring_consent_granted_again_renews_the_active_one(enduring_consent, admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:offline_access_enduringconsent_add"),
        enduring_form(enduring_consent.user, enduring_consent.application, reason="Contract renewed"),
    )
    assert response.status_code == 302, response.content
    assert Consent.objects.get() == enduring_consent
    enduring_consent.refresh_from_db()
    assert enduring_consent.reason == "Contract renewed"
    assert enduring_consent.granted_by == admin_user
    event = enduring_consent.events.get()
    assert (event.action, event.actor, event.via) == (Action.RENEWED, admin_user, Via.ADMIN)


def test_enduring_consent_changelist_shows_only_enduring_consents(scene, enduring_consent, admin_client):
    response = admin_client.get(reverse("admin:offline_access_enduringconsent_changelist"))
    assert result_pks(response) == {enduring_consent.pk, scene.enduring.pk}


# Read-only records ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["consent", "enduringconsent", "offlinetokenfamily"])
def test_admin_records_cannot_be_deleted(scene, enduring_consent, admin_client, model):
    obj = {
        "consent": scene.alice_calendar,
        "enduringconsent": enduring_consent,
        "offlinetokenfamily": scene.family(scene.alice_phone),
    }[model]
    url = reverse(f"admin:offline_access_{model}_delete", args=[obj.pk])
    before = snapshot()
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert snapshot() == before
    change = admin_client.get(reverse(f"admin:offline_access_{model}_change", args=[obj.pk]))
    assert url not in change.content.decode()


@pytest.mark.parametrize("model", ["consent", "enduringconsent", "offlinetokenfamily"])
def test_admin_record_pages_are_read_only(scene, enduring_consent, admin_client, model):
    obj = {
        "consent": scene.alice_calendar,
        "enduringconsent": enduring_consent,
        "offlinetokenfamily": scene.family(scene.alice_phone),
    }[model]
    url = reverse(f"admin:offline_access_{model}_change", args=[obj.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert not page.context["adminform"].form.fields  # every field is shown read-only
    assert page.context["has_change_permission"] is False
    assert 'name="_save"' not in page.content.decode()
    before = snapshot()
    response = admin_client.post(
        url,
        {"status": "revoked", "end_reason": "edited", "expires_at": "2000-01-01", "ended_at": "2000-01-01"},
    )
    assert response.status_code == 403
    assert snapshot() == before


@pytest.mark.parametrize("model", ["consent", "offlinetokenfamily"])
def test_admin_records_cannot_be_added_by_hand(db, admin_client, model):
    assert admin_client.get(reverse(f"admin:offline_access_{model}_add")).status_code == 403


def test_consent_event_history_is_read_only(scene, admin_client):
    page = admin_client.get(reverse("admin:offline_access_consent_change", args=[scene.alice_calendar.pk]))
    (inline,) = page.context["inline_admin_formsets"]
    assert inline.has_add_permission is False
    assert inline.has_change_permission is False
    assert inline.has_delete_permission is False
    assert not any(form.fields.keys() - {"id", "consent"} for form in inline.formset.forms)


# Filters and search ---------------------------------------------------------------------------------


@pytest.fixture
def catalogue(user, other_user, application, other_application):
    """Consents in every state and kind, over three clients and three users."""
    weather = factories.ApplicationFactory(name="Weather Station", client_id="ws-123")
    carol = factories.UserFactory(username="carol", email="c.jones@corp.test")
    now = timezone.now()
    rows = {
        "active": factories.ConsentFactory(user=user, application=application),
        "passed": factories.ConsentFactory(
            user=other_user, application=application, expires_at=now - timedelta(minutes=1)
        ),
        "expired": factories.ConsentFactory(
            user=user, application=other_application, status=Status.EXPIRED, ended_at=now
        ),
        "revoked": factories.ConsentFactory(
            user=other_user, application=other_application, status=Status.REVOKED, ended_at=now
        ),
        "enduring": factories.EnduringConsentFactory(
            user=user, application=other_application, expires_at=now + timedelta(days=1)
        ),
        "carol": factories.ConsentFactory(user=carol, application=weather),
        "old": factories.ConsentFactory(
            user=carol,
            application=weather,
            status=Status.REVOKED,
            granted_at=datetime(2020, 6, 1, 12, tzinfo=UTC),
            created_at=datetime(2020, 6, 1, 12, tzinfo=UTC),
        ),
    }
    return {name: consent.pk for name, consent in rows.items()}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"active", "passed", "expired", "revoked", "enduring", "carol", "old"}),
        ("state=active", {"active", "enduring", "carol"}),
        ("state=expired", {"passed", "expired"}),
        ("state=revoked", {"revoked", "old"}),
        ("kind__exact=enduring", {"enduring"}),
        ("kind__exact=interactive", {"active", "passed", "expired", "revoked", "carol", "old"}),
        ("state=active&kind__exact=interactive", {"active", "carol"}),
        ("q=alice", {"active", "expired", "enduring"}),
        ("q=c.jones%40corp.test", {"carol", "old"}),
        ("q=corp.test", {"carol", "old"}),
        ("q=ws-123", {"carol", "old"}),
        ("q=Weather", {"carol", "old"}),
        ("q=backup-tool", {"expired", "revoked", "enduring"}),
        ("q=Calendar+Sync", {"active", "passed"}),
        ("q=mallory&state=revoked", {"revoked"}),
        ("granted_at__year=2020", {"old"}),
    ],
)
def test_consent_changelist_filters_and_search(catalogue, admin_client, query, expected):
    response = admin_client.get(reverse("admin:offline_access_consent_changelist") + "?" + query)
    assert result_pks(response) == {catalogue[name] for name in expected}


def test_consent_changelist_filters_by_client(catalogue, admin_client, application, other_application):
    url = reverse("admin:offline_access_consent_changelist")
    response = admin_client.get(f"{url}?application__id__exact={application.pk}")
    assert result_pks(response) == {catalogue["active"], catalogue["passed"]}
    response = admin_client.get(f"{url}?application__id__exact={other_application.pk}&state=active")
    assert result_pks(response) == {catalogue["enduring"]}


def test_consent_changelist_shows_an_active_consent_past_its_expiry_as_expired(catalogue, admin_client):
    response = admin_client.get(reverse("admin:offline_access_consent_changelist"))
    html = response.content.decode()
    states = {}
    for row in html.split("<tr")[1:]:
        for name, pk in catalogue.items():
            if f'name="{ACTION_CHECKBOX_NAME}" value="{pk}"' in row:
                states[name] = row.split('<td class="field-state">', 1)[1].split("</td>", 1)[0]
    assert states == {
        "active": "Active",
        "passed": "Expired",
        "expired": "Expired",
        "revoked": "Revoked",
        "enduring": "Active",
        "carol": "Active",
        "old": "Revoked",
    }


def test_enduring_consent_changelist_filters_by_state(catalogue, admin_client):
    url = reverse("admin:offline_access_enduringconsent_changelist")
    assert result_pks(admin_client.get(url + "?state=active")) == {catalogue["enduring"]}
    assert result_pks(admin_client.get(url + "?state=revoked")) == set()
    assert result_pks(admin_client.get(url + "?q=alice")) == {catalogue["enduring"]}


def test_token_family_changelist_shows_live_families_by_default(scene, admin_client):
    phone = scene.family(scene.alice_phone)
    url = reverse("admin:offline_access_offlinetokenfamily_changelist")
    everyone = set(OfflineTokenFamily.objects.values_list("pk", flat=True))
    assert len(everyone) == 4
    # A narrowed refresh ends one family: it drops out of the default (live) list.
    response = refresh(Client(), scene.calendar, scene.alice_phone["refresh_token"], scope="openid")
    assert response.status_code == 200
    assert "refresh_token" not in response.json()

    assert result_pks(admin_client.get(url)) == everyone - {phone.pk}
    assert result_pks(admin_client.get(url + "?state=live")) == everyone - {phone.pk}
    assert result_pks(admin_client.get(url + "?state=ended")) == {phone.pk}
    assert result_pks(admin_client.get(url + "?state=all")) == everyone


@pytest.mark.parametrize(
    ("query", "owners"),
    [
        ("q=alice", {"alice"}),
        ("q=mallory%40example.com", {"mallory"}),
        ("q=backup-tool", {"alice"}),
        ("q=Backup+Tool", {"alice"}),
    ],
)
def test_token_family_changelist_search(scene, admin_client, query, owners):
    response = admin_client.get(reverse("admin:offline_access_offlinetokenfamily_changelist") + "?" + query)
    rows = response.context["cl"].result_list
    assert {row.user.username for row in rows} == owners
    if "ackup" in query:
        assert {row.application_id for row in rows} == {scene.backup.pk}


def test_token_family_changelist_filters_by_client(scene, admin_client):
    url = reverse("admin:offline_access_offlinetokenfamily_changelist")
    response = admin_client.get(f"{url}?application__id__exact={scene.backup.pk}")
    assert result_pks(response) == {scene.family(scene.alice_backup).pk}


#: RFC 7638 section 3.1's example thumbprint: what a key-bound family keeps in dpop_jkt.
JKT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def key_bound_cells(response) -> dict[int, str]:
    """The "Key-bound (DPoP)" cell of each row of a changelist, by primary key."""
    cells = {}
    for row in response.content.decode().split("<tr")[1:]:
        if ACTION_CHECKBOX_NAME in row:
            pk = int(row.split(f'name="{ACTION_CHECKBOX_NAME}" value="', 1)[1].split('"', 1)[0])
            cells[pk] = row.split('<td class="field-key_bound">', 1)[1].split("</td>", 1)[0]
    return cells


def test_token_family_changelist_shows_and_filters_key_bound_devices(scene, admin_client):
    phone = scene.family(scene.alice_phone)
    OfflineTokenFamily.objects.filter(pk=phone.pk).update(dpop_jkt=JKT)
    url = reverse("admin:offline_access_offlinetokenfamily_changelist")
    everyone = set(OfflineTokenFamily.objects.values_list("pk", flat=True))

    response = admin_client.get(url)
    html = response.content.decode()
    assert "Key-bound (DPoP)" in html  # the column, and the filter's title
    cells = key_bound_cells(response)
    assert set(cells) == everyone
    assert 'alt="True"' in cells[phone.pk]
    assert all('alt="False"' in cell for pk, cell in cells.items() if pk != phone.pk)

    assert result_pks(admin_client.get(url + "?key_bound=yes")) == {phone.pk}
    assert result_pks(admin_client.get(url + "?key_bound=no")) == everyone - {phone.pk}
    assert result_pks(admin_client.get(url + "?key_bound=bogus")) == everyone  # ignored, never a 500
    # A thumbprint seen elsewhere (introspection's cnf.jkt) finds its device, and only by exact value.
    assert result_pks(admin_client.get(url + "?q=" + JKT)) == {phone.pk}
    assert result_pks(admin_client.get(url + "?q=" + JKT[:20])) == set()


def test_token_family_change_page_shows_the_key_binding(scene, admin_client):
    phone, laptop = scene.family(scene.alice_phone), scene.family(scene.alice_laptop)
    OfflineTokenFamily.objects.filter(pk=phone.pk).update(dpop_jkt=JKT)

    def key_bound_field(family) -> str:
        html = admin_client.get(
            reverse("admin:offline_access_offlinetokenfamily_change", args=[family.pk])
        ).content.decode()
        return html.split("field-key_bound", 1)[1].split("field-dpop_jkt", 1)[0]

    assert "Key-bound (DPoP)" in key_bound_field(phone)
    assert 'alt="True"' in key_bound_field(phone)
    assert 'alt="False"' in key_bound_field(laptop)
    page = admin_client.get(reverse("admin:offline_access_offlinetokenfamily_change", args=[phone.pk]))
    assert JKT in page.content.decode()  # the thumbprint (not a secret) names the key


def test_user_overview_shows_which_devices_are_key_bound(scene, admin_client):
    phone = scene.family(scene.alice_phone)
    OfflineTokenFamily.objects.filter(pk=phone.pk).update(dpop_jkt=JKT)
    response = admin_client.get(reverse("admin:offline_access_consent_user", args=[scene.alice.pk]))
    html = response.content.decode()
    assert "Key-bound (DPoP)" in html
    families = html.split("Devices (token families)", 1)[1]
    cells = [cell.split("</td>", 1)[0] for cell in families.split('<td class="key-bound">')[1:]]
    assert sorted(cells) == ["No", "No", "Yes"]  # alice's three devices, one bound
    assert [f.dpop_jkt == JKT for f in response.context["families"]].count(True) == 1


def test_client_policy_changelist_search_and_filter(application, other_application, admin_client):
    barred = ClientPolicy.objects.create(application=application, allow_offline_access=False)
    allowed = ClientPolicy.objects.create(
        application=other_application, refresh_token_idle_timeout=timedelta(days=2)
    )
    url = reverse("admin:offline_access_clientpolicy_changelist")
    assert result_pks(admin_client.get(url)) == {barred.pk, allowed.pk}
    assert result_pks(admin_client.get(url + "?allow_offline_access__exact=0")) == {barred.pk}
    assert result_pks(admin_client.get(url + "?q=backup-tool")) == {allowed.pk}
    assert result_pks(admin_client.get(url + "?q=Calendar")) == {barred.pk}


# Token values never appear ------------------------------------------------------------------------


def test_token_values_never_appear_in_admin_pages(scene, enduring_consent, admin_user):
    # A server error on one page is reported with the others instead of stopping the test.
    admin_client = Client(raise_request_exception=False)
    admin_client.force_login(admin_user)
    # A rotation leaves a used refresh token and a new pair behind: every row counts.
    rotated = assert_refresh_works(scene.calendar, scene.alice_laptop["refresh_token"])
    ClientPolicy.objects.create(application=scene.calendar, refresh_token_idle_timeout=timedelta(days=3))
    secrets = set()
    for model in (RefreshToken, AccessToken):
        for token, token_checksum in model.objects.values_list("token", "token_checksum"):
            secrets |= {token, token_checksum, token[:16], token[-16:]}
    # Rotation deleted the laptop's first access token; its value must not appear either.
    for tokens in (scene.alice_phone, scene.alice_laptop, rotated, scene.mallory_phone, scene.alice_backup):
        for value in (tokens["refresh_token"], tokens["access_token"]):
            secrets |= {value, checksum(value), value[:16], value[-16:]}

    consents = reverse("admin:offline_access_consent_changelist")
    families = reverse("admin:offline_access_offlinetokenfamily_changelist")
    pages = {
        consents: admin_client.get(consents),
        families: admin_client.get(families + "?state=all"),
        "enduring": admin_client.get(reverse("admin:offline_access_enduringconsent_changelist")),
        "policies": admin_client.get(reverse("admin:offline_access_clientpolicy_changelist")),
        "policy": admin_client.get(
            reverse("admin:offline_access_clientpolicy_change", args=[ClientPolicy.objects.get().pk])
        ),
        "overview": admin_client.get(reverse("admin:offline_access_consent_user", args=[scene.alice.pk])),
        "application": admin_client.get(
            reverse("admin:oauth2_provider_application_change", args=[scene.calendar.pk])
        ),
        "enduring page": admin_client.get(
            reverse("admin:offline_access_enduringconsent_change", args=[enduring_consent.pk])
        ),
        "overview confirmation": admin_client.post(
            reverse("admin:offline_access_consent_user", args=[scene.alice.pk])
        ),
    }
    for consent in Consent.objects.all():
        pages[f"consent {consent.pk}"] = admin_client.get(
            reverse("admin:offline_access_consent_change", args=[consent.pk])
        )
    for family in OfflineTokenFamily.objects.all():
        pages[f"family {family.pk}"] = admin_client.get(
            reverse("admin:offline_access_offlinetokenfamily_change", args=[family.pk])
        )
    for action in CONSENT_ACTIONS:
        pages[action] = admin_client.post(
            consents,
            {"action": action, ACTION_CHECKBOX_NAME: list(Consent.objects.values_list("pk", flat=True))},
        )
    pages["revoke_selected_families"] = admin_client.post(
        families,
        {
            "action": "revoke_selected_families",
            ACTION_CHECKBOX_NAME: list(OfflineTokenFamily.objects.values_list("pk", flat=True)),
        },
    )

    assert len(pages) > 15
    problems = {}
    for name, response in pages.items():
        html = response.content.decode()
        leaked = [secret for secret in secrets if secret in html]
        if response.status_code != 200 or leaked:
            problems[name] = (response.status_code, leaked)
    assert problems == {}
    # The rows were there to leak: the pages show the families and consents.
    assert len(pages[families].context["cl"].result_list) == OfflineTokenFamily.objects.count()
    assert pages["revoke_selected_families"].context["refresh_token_count"] == 4


# Query counts ---------------------------------------------------------------------------------------


def populate(n: int) -> None:
    """``n`` users, clients, consents (every kind and state), token families and client policies."""
    tag = uuid.uuid4().hex[:8]
    now = timezone.now()
    users = User.objects.bulk_create(
        [User(username=f"u-{tag}-{i}", email=f"u-{tag}-{i}@example.com", password="!") for i in range(n)],
        batch_size=BATCH,
    )
    applications = Application.objects.bulk_create(
        [
            Application(
                name=f"Client {tag} {i}",
                client_id=f"client-{tag}-{i}",
                client_secret="",
                hash_client_secret=False,
                client_type="confidential",
                authorization_grant_type="authorization-code",
                redirect_uris="https://client.example/callback",
            )
            for i in range(n)
        ],
        batch_size=BATCH,
    )
    states = [
        {"status": Status.ACTIVE},
        {"status": Status.ACTIVE, "expires_at": now - timedelta(days=1)},
        {"status": Status.ACTIVE, "expires_at": now + timedelta(days=1)},
        {"status": Status.REVOKED, "ended_at": now},
        {"status": Status.EXPIRED, "ended_at": now},
    ]
    consents = Consent.objects.bulk_create(
        [
            Consent(
                user=users[i],
                application=applications[i],
                kind=Kind.ENDURING if i % 2 else Kind.INTERACTIVE,
                scope="openid offline_access",
                granted_at=now - timedelta(days=400 * (i % 3)),
                **states[i % len(states)],
            )
            for i in range(n)
        ],
        batch_size=BATCH,
    )
    ClientPolicy.objects.bulk_create(
        [
            ClientPolicy(
                application=applications[i],
                allow_offline_access=bool(i % 2),
                refresh_token_idle_timeout=timedelta(days=i % 7) if i % 7 else None,
            )
            for i in range(0, n, 2)  # every other client follows the defaults
        ],
        batch_size=BATCH,
    )
    _bulk_families(consents, ended=lambda i: i % 4 == 0)


def _bulk_families(consents, *, ended) -> None:
    now = timezone.now()
    prefix = uuid.uuid4().hex
    families = [uuid.uuid4() for _ in consents]
    access_tokens = AccessToken.objects.bulk_create(
        [
            AccessToken(
                user_id=consent.user_id,
                application_id=consent.application_id,
                token=stored(f"pop-access-{prefix}-{i}"),
                token_checksum=checksum(f"pop-access-{prefix}-{i}"),
                expires=now + timedelta(minutes=10),
                scope=consent.scope,
            )
            for i, consent in enumerate(consents)
        ],
        batch_size=BATCH,
    )
    RefreshToken.objects.bulk_create(
        [
            RefreshToken(
                user_id=consent.user_id,
                application_id=consent.application_id,
                token=stored(f"pop-refresh-{prefix}-{i}"),
                token_checksum=checksum(f"pop-refresh-{prefix}-{i}"),
                access_token=access_token,
                token_family=family,
                revoked=now if ended(i) else None,
            )
            for i, (consent, access_token, family) in enumerate(
                zip(consents, access_tokens, families, strict=True)
            )
        ],
        batch_size=BATCH,
    )
    OfflineTokenFamily.objects.bulk_create(
        [
            OfflineTokenFamily(
                token_family=family,
                user_id=consent.user_id,
                application_id=consent.application_id,
                consent=consent,
                ended_at=now if ended(i) else None,
                # Every third device key-bound: the pinned counts cover the "Key-bound (DPoP)" column.
                dpop_jkt=f"{i:043d}" if i % 3 == 0 else "",
            )
            for i, (consent, family) in enumerate(zip(consents, families, strict=True))
        ],
        batch_size=BATCH,
    )


def populate_user(subject, n: int) -> None:
    """``n`` consents of one user over ``n`` clients, each with a token family."""
    tag = uuid.uuid4().hex[:8]
    now = timezone.now()
    applications = Application.objects.bulk_create(
        [
            Application(
                name=f"App {tag} {i}",
                client_id=f"app-{tag}-{i}",
                client_secret="",
                hash_client_secret=False,
                client_type="public",
                authorization_grant_type="authorization-code",
                redirect_uris="http://127.0.0.1/callback",
            )
            for i in range(n)
        ],
        batch_size=BATCH,
    )
    consents = Consent.objects.bulk_create(
        [
            Consent(
                user=subject,
                application=application,
                kind=Kind.INTERACTIVE if i % 3 else Kind.ENDURING,
                scope="openid offline_access",
                status=Status.ACTIVE if i % 2 else Status.REVOKED,
                expires_at=now + timedelta(days=i % 5) if i % 5 else None,
            )
            for i, application in enumerate(applications)
        ],
        batch_size=BATCH,
    )
    _bulk_families(consents, ended=lambda i: i % 2 == 0)


@pytest.mark.parametrize("rows", [10, 1000])
@pytest.mark.parametrize(
    ("changelist", "expected"),
    [
        ("admin:offline_access_consent_changelist", CONSENT_CHANGELIST_QUERIES),
        ("admin:offline_access_enduringconsent_changelist", ENDURING_CONSENT_CHANGELIST_QUERIES),
        ("admin:offline_access_offlinetokenfamily_changelist", FAMILY_CHANGELIST_QUERIES),
        ("admin:offline_access_clientpolicy_changelist", CLIENT_POLICY_CHANGELIST_QUERIES),
    ],
)
def test_changelist_query_count_does_not_grow_with_rows(
    admin_client, django_assert_num_queries, changelist, expected, rows
):
    populate(rows)
    url = reverse(changelist)

    with django_assert_num_queries(expected):
        response = admin_client.get(url)

    assert response.status_code == 200
    cl = response.context["cl"]
    assert len(cl.result_list) == min(cl.result_count, cl.list_per_page)
    assert cl.result_count >= rows // 4
    if changelist == "admin:offline_access_offlinetokenfamily_changelist":
        # Key-bound and bearer devices on the page, shown from the rows already read.
        cells = key_bound_cells(response).values()
        assert any('alt="True"' in cell for cell in cells)
        assert any('alt="False"' in cell for cell in cells)


@pytest.mark.parametrize("rows", [10, 1000])
def test_user_overview_query_count_does_not_grow_with_rows(
    admin_client, user, django_assert_num_queries, rows
):
    populate_user(user, rows)
    url = reverse("admin:offline_access_consent_user", args=[user.pk])

    with django_assert_num_queries(USER_OVERVIEW_QUERIES):
        response = admin_client.get(url)

    assert response.status_code == 200
    # One page of each list (100 rows), whatever the user holds.
    assert len(response.context["consents"]) == len(response.context["families"]) == min(rows, 100)
    html = response.content.decode()
    assert '<td class="key-bound">Yes</td>' in html
    assert '<td class="key-bound">No</td>' in html


# Revoking many tokens in one action -----------------------------------------------------------------


@pytest.mark.parametrize("families", [10, 10_000])
def test_admin_revoke_runs_a_bounded_number_of_queries(
    user, other_user, application, admin_client, admin_user, django_assert_num_queries, families
):
    mine = offline_tokens(user, application)
    theirs = offline_tokens(other_user, application)
    consent = Consent.objects.get(user=user, application=application)
    bulk = add_token_families(consent, families - 1)
    url = reverse("admin:offline_access_consent_changelist")
    confirmation = admin_client.post(
        url, {"action": "revoke_selected_consents", ACTION_CHECKBOX_NAME: [consent.pk]}
    )
    assert_summary(confirmation, consents=1, refresh_tokens=families, access_tokens=families)
    data = form_data(confirmation, "confirm")
    data["reason"] = [REASON]

    with django_assert_num_queries(ADMIN_REVOKE_QUERIES):
        done = admin_client.post(url, data)

    assert done.status_code == 302
    assert messages_of(done) == [revoked_message(1, families, families)]
    assert_revoked_by(consent, admin_user)
    assert not RefreshToken.objects.filter(user=user, revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(user=user, expires__gt=timezone.now()).exists()
    assert OfflineTokenFamily.objects.filter(consent=consent, ended_at__isnull=False).count() == families
    assert_refresh_refused(application, mine["refresh_token"])
    assert_refresh_refused(application, bulk[-1][0])
    assert_access_token_dead(bulk[-1][1])
    assert_refresh_works(application, theirs["refresh_token"])


# The client policy on DOT's application page ---------------------------------------------------------


def test_application_page_shows_the_offline_access_policy_inline(application, admin_client):
    page = admin_client.get(reverse("admin:oauth2_provider_application_change", args=[application.pk]))
    assert page.status_code == 200
    inlines = [
        inline for inline in page.context["inline_admin_formsets"] if inline.formset.model is ClientPolicy
    ]
    assert len(inlines) == 1
    assert "offline access policy" in page.content.decode().lower()


def test_application_page_saves_a_policy_that_bars_offline_access(user, application, admin_client):
    url = reverse("admin:oauth2_provider_application_change", args=[application.pk])
    page = admin_client.get(url)
    (inline,) = [
        inline for inline in page.context["inline_admin_formsets"] if inline.formset.model is ClientPolicy
    ]
    prefix = inline.formset.prefix
    data = form_data(page, f"{prefix}-TOTAL_FORMS")
    assert data[f"{prefix}-TOTAL_FORMS"] == ["1"]
    assert data[f"{prefix}-INITIAL_FORMS"] == ["0"]
    assert data[f"{prefix}-0-allow_offline_access"] == ["on"]  # allowed unless said otherwise
    del data[f"{prefix}-0-allow_offline_access"]  # untick the box
    data[f"{prefix}-0-refresh_token_idle_timeout"] = ["7 00:00:00"]
    data["_save"] = ["Save"]

    response = admin_client.post(url, data)

    assert response.status_code == 302, (
        response.context["adminform"].form.errors if response.context else None
    )
    policy = ClientPolicy.objects.get()
    assert policy.application == application
    assert policy.allow_offline_access is False
    assert policy.refresh_token_idle_timeout == timedelta(days=7)
    application.refresh_from_db()
    assert application.client_id == "calendar-sync"
    # The saved rule is in force at once: the client gets no refresh token.
    body = exchange_code(
        Client(), application, get_code(logged_in(user), application, prompt="consent")
    ).json()
    assert "refresh_token" not in body
    assert "offline_access" not in body["scope"].split()


def test_application_page_policy_inline_refused_to_staff_without_the_permission(application, staff):
    client = staff("oauth2_provider.change_application")
    url = reverse("admin:oauth2_provider_application_change", args=[application.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert not [
        inline for inline in page.context["inline_admin_formsets"] if inline.formset.model is ClientPolicy
    ]
