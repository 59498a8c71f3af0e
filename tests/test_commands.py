"""The management commands: thin wrappers over services.py (SPEC C3, C5; public contract)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import exchange_code, get_code, offline_tokens, refresh

Via = ConsentEvent.Via
Action = ConsentEvent.Action


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def assert_refresh_refused(api, application, refresh_token: str) -> None:
    response = refresh(api, application, refresh_token)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"


@pytest.fixture
def other_application(db):
    return factories.ApplicationFactory(name="Backup Tool", client_id="backup-tool")


# grant_enduring_consent ----------------------------------------------------------------


def test_grant_enduring_consent_command_records_a_consent(user, application):
    output = run("grant_enduring_consent", "--user", "alice", "--application", "calendar-sync")

    consent = Consent.objects.get()
    assert output == (
        f"Granted enduring consent #{consent.pk} for user 'alice' "
        "and client 'calendar-sync', with no expiry.\n"
    )
    assert consent.user == user
    assert consent.application == application
    assert consent.kind == Consent.Kind.ENDURING
    assert consent.status == Consent.Status.ACTIVE
    assert consent.expires_at is None
    assert consent.granted_by is None
    assert consent.reason == "Granted with the grant_enduring_consent command."
    event = consent.events.get()
    assert (event.action, event.via, event.actor, event.reason) == (
        Action.GRANTED,
        Via.COMMAND,
        None,
        "Granted with the grant_enduring_consent command.",
    )


def test_grant_enduring_consent_command_with_reason_and_expiry(user, application):
    before = timezone.now()
    output = run(
        "grant_enduring_consent",
        "--user=alice",
        "--application=calendar-sync",
        "--reason=Contract 2025-17",
        "--expires-in=30",
    )
    after = timezone.now()

    consent = Consent.objects.get()
    assert before + timedelta(days=30) <= consent.expires_at <= after + timedelta(days=30)
    assert consent.reason == "Contract 2025-17"
    assert output.startswith(f"Granted enduring consent #{consent.pk} for user 'alice'")
    assert f"until {consent.expires_at:%Y-%m-%d %H:%M}" in output
    assert consent.events.get().reason == "Contract 2025-17"


def test_grant_enduring_consent_command_renews(user, application):
    run("grant_enduring_consent", "--user", "alice", "--application", "calendar-sync", "--expires-in", "1")
    output = run(
        "grant_enduring_consent", "--user", "alice", "--application", "calendar-sync", "--reason", "Extended"
    )

    consent = Consent.objects.get()
    assert output.startswith(f"Renewed enduring consent #{consent.pk} ")
    assert consent.expires_at is None
    assert consent.reason == "Extended"
    assert [event.action for event in consent.events.all()] == [Action.GRANTED, Action.RENEWED]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody", "--application", "calendar-sync"], "No user with username 'nobody'"),
        (
            ["--user", "alice", "--application", "no-such-client"],
            "No application with client ID 'no-such-client'",
        ),
        (["--user", "alice", "--application", "calendar-sync", "--expires-in", "0"], "--expires-in"),
        (["--user", "alice", "--application", "calendar-sync", "--expires-in", "-5"], "--expires-in"),
        (["--user", "alice", "--application", "calendar-sync", "--reason", "  "], "reason"),
    ],
)
def test_grant_enduring_consent_command_errors(user, application, args, message):
    with pytest.raises(CommandError, match=message):
        run("grant_enduring_consent", *args)
    assert not Consent.objects.exists()


def test_grant_enduring_consent_command_lets_offline_access_through_without_prompt_consent(
    browser, api, user, application
):
    # Without prompt=consent and without an enduring consent, offline_access is dropped.
    response = exchange_code(api, application, get_code(browser, application))
    assert response.status_code == 200, response.content
    assert "refresh_token" not in response.json()
    assert "offline_access" not in response.json()["scope"].split()

    run("grant_enduring_consent", "--user", "alice", "--application", "calendar-sync")

    response = exchange_code(api, application, get_code(browser, application))
    assert response.status_code == 200, response.content
    body = response.json()
    assert "refresh_token" in body
    assert "offline_access" in body["scope"].split()
    family = OfflineTokenFamily.objects.get(user=user, application=application)
    assert family.consent.kind == Consent.Kind.ENDURING
    response = refresh(api, application, body["refresh_token"])
    assert response.status_code == 200, response.content


# revoke_offline_access -------------------------------------------------------------------


def test_revoke_offline_access_command_for_one_client(browser, api, user, application, other_application):
    tokens = offline_tokens(browser, api, application)
    kept = offline_tokens(browser, api, other_application)

    output = run(
        "revoke_offline_access", "--user", "alice", "--application", "calendar-sync", "--reason", "Lost phone"
    )

    assert output == (
        "Revoked 1 consent(s), 1 refresh token(s) and 1 access token(s) of user 'alice' "
        "for client 'calendar-sync'.\n"
    )
    consent = Consent.objects.get(user=user, application=application)
    assert consent.status == Consent.Status.REVOKED
    assert consent.end_reason == "Lost phone"
    event = consent.events.last()
    assert (event.action, event.via, event.actor, event.reason) == (
        Action.REVOKED,
        Via.COMMAND,
        None,
        "Lost phone",
    )
    assert_refresh_refused(api, application, tokens["refresh_token"])
    assert Consent.objects.get(user=user, application=other_application).status == Consent.Status.ACTIVE
    response = refresh(api, other_application, kept["refresh_token"])
    assert response.status_code == 200, response.content


def test_revoke_offline_access_command_for_all_clients(
    browser, api, user, other_user, application, other_application
):
    first = offline_tokens(browser, api, application)
    rotated = refresh(api, application, first["refresh_token"]).json()
    second = offline_tokens(browser, api, other_application)
    other_browser = type(browser)()
    other_browser.force_login(other_user)
    theirs = offline_tokens(other_browser, api, application)

    output = run("revoke_offline_access", "--user", "alice")

    assert output == (
        "Revoked 2 consent(s), 2 refresh token(s) and 2 access token(s) of user 'alice' for all clients.\n"
    )
    assert_refresh_refused(api, application, rotated["refresh_token"])
    assert_refresh_refused(api, application, first["refresh_token"])
    assert_refresh_refused(api, other_application, second["refresh_token"])
    assert not Consent.objects.filter(user=user, status=Consent.Status.ACTIVE).exists()
    response = refresh(api, application, theirs["refresh_token"])
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody"], "No user with username 'nobody'"),
        (
            ["--user", "alice", "--application", "no-such-client"],
            "No application with client ID 'no-such-client'",
        ),
    ],
)
def test_revoke_offline_access_command_unknown_names(browser, api, user, application, args, message):
    tokens = offline_tokens(browser, api, application)
    with pytest.raises(CommandError, match=message):
        run("revoke_offline_access", *args)
    assert Consent.objects.get().status == Consent.Status.ACTIVE
    response = refresh(api, application, tokens["refresh_token"])
    assert response.status_code == 200, response.content


def test_revoke_offline_access_command_nothing_to_revoke(user, application):
    with pytest.raises(CommandError, match="Nothing to revoke: user 'alice'"):
        run("revoke_offline_access", "--user", "alice", "--application", "calendar-sync")
    with pytest.raises(CommandError, match="Nothing to revoke"):
        run("revoke_offline_access", "--user", "alice")


def test_revoke_offline_access_command_twice(browser, api, user, application):
    offline_tokens(browser, api, application)
    run("revoke_offline_access", "--user", "alice")
    with pytest.raises(CommandError, match="Nothing to revoke"):
        run("revoke_offline_access", "--user", "alice")
    assert ConsentEvent.objects.filter(action=Action.REVOKED).count() == 1


def test_revoke_offline_access_command_dry_run_changes_nothing(
    browser, api, user, application, other_application
):
    offline_tokens(browser, api, application)
    tokens = offline_tokens(browser, api, other_application)

    output = run("revoke_offline_access", "--user", "alice", "--dry-run")
    assert output == "Would revoke 2 consent(s) and 2 token family(ies) of user 'alice' for all clients.\n"
    output = run("revoke_offline_access", "--user", "alice", "--application", "backup-tool", "--dry-run")
    assert output == (
        "Would revoke 1 consent(s) and 1 token family(ies) of user 'alice' for client 'backup-tool'.\n"
    )

    assert not Consent.objects.exclude(status=Consent.Status.ACTIVE).exists()
    assert not ConsentEvent.objects.filter(action=Action.REVOKED).exists()
    assert not OfflineTokenFamily.objects.filter(ended_at__isnull=False).exists()
    response = refresh(api, other_application, tokens["refresh_token"])
    assert response.status_code == 200, response.content


def test_revoke_offline_access_command_revokes_enduring_consent(browser, api, user, application):
    run("grant_enduring_consent", "--user", "alice", "--application", "calendar-sync")
    response = exchange_code(api, application, get_code(browser, application))
    tokens = response.json()
    assert "refresh_token" in tokens

    output = run("revoke_offline_access", "--user", "alice", "--application", "calendar-sync")

    assert output.startswith("Revoked 1 consent(s), 1 refresh token(s) and 1 access token(s)")
    assert_refresh_refused(api, application, tokens["refresh_token"])
    # offline_access no longer comes through without prompt=consent.
    response = exchange_code(api, application, get_code(browser, application))
    assert "refresh_token" not in response.json()
