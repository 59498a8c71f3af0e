"""Account events end offline access (issue 9, "Account events").

A deactivated user, a changed or reset password, a deleted client or user must
leave no token alive where nobody wants it; a deleted client's consent history
stays for the audit with the client's id and name as they were.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.tokens import default_token_generator
from django.db.models.signals import post_save
from django.test import Client
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from offline_access import services, signals
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import exchange_code, get_code, stored
from .test_consent import (
    add_token_families,
    assert_access_token_accepted,
    assert_access_token_rejected,
    assert_refresh_refused,
    assert_refresh_works,
    logged_in,
    offline_tokens,
)
from .test_query_counts import LIVE_REFRESH_TOKENS_READ_QUERIES
from .test_signals import receiving

User = get_user_model()
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()

NEW_PASSWORD = "a-Fresh-passphrase-2931"

#: Queries to end all of a user's access, however many consents and devices:
#: revoke_offline_access (savepoint, lock the consents, update them, their events,
#: delete their unexchanged codes, the six statements on their families, then the
#: four on all the user's families, whose lock finds no live token left,
#: release) plus the sweep of what no family holds (savepoint, expire access tokens,
#: revoke refresh tokens, delete codes and device codes, release).
END_USER_ACCESS_QUERIES = 22 + LIVE_REFRESH_TOKENS_READ_QUERIES


# Helpers -----------------------------------------------------------------------


def plain_access_token(user, application) -> str:
    """An access token without offline_access (no refresh token): what a web login leaves."""
    code = get_code(logged_in(user), application, scope="openid")
    body = exchange_code(Client(), application, code).json()
    assert "refresh_token" not in body, body
    return body["access_token"]


def account_events(user) -> list[tuple[str, str, str]]:
    return list(
        ConsentEvent.objects.filter(consent__user=user, action=ConsentEvent.Action.REVOKED).values_list(
            "action", "via", "reason"
        )
    )


def live_tokens(**filters) -> tuple[int, int, int]:
    now = timezone.now()
    return (
        AccessToken.objects.filter(expires__gt=now, **filters).count(),
        RefreshToken.objects.filter(revoked__isnull=True, **filters).count(),
        OfflineTokenFamily.objects.filter(ended_at__isnull=True, **filters).count(),
    )


@pytest.fixture
def admin_user(db):
    return factories.UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def other_application(db):
    return factories.ApplicationFactory(name="Backup Tool", client_id="backup-tool")


# Deactivation --------------------------------------------------------------------


def test_deactivation_ends_every_token_of_the_user_at_once(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    web_token = plain_access_token(user, application)
    assert_access_token_accepted(api, application, web_token)

    user.is_active = False
    user.save()

    assert_access_token_rejected(api, application, tokens["access_token"])
    # Not only offline families: every access token of a deactivated user stops working.
    assert_access_token_rejected(api, application, web_token)
    assert_refresh_refused(api, application, tokens["refresh_token"])
    consent = Consent.objects.get(user=user)
    assert consent.status == Consent.Status.REVOKED
    assert consent.end_reason == "user deactivated"
    assert account_events(user) == [("revoked", "account", "user deactivated")]
    assert live_tokens(user=user) == (0, 0, 0)


def test_deactivation_with_update_fields_and_deferred_is_active(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    # is_active not loaded: the receiver cannot know the old value and asks the database.
    loaded = User.objects.only("pk", "username").get(pk=user.pk)
    loaded.is_active = False
    loaded.save(update_fields=["is_active"])

    assert_access_token_rejected(api, application, tokens["access_token"])
    assert account_events(user) == [("revoked", "account", "user deactivated")]


def test_deactivation_of_an_instance_built_in_memory(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    fields = {field.attname: getattr(user, field.attname) for field in User._meta.concrete_fields}
    rebuilt = User(**{**fields, "is_active": False})  # never loaded: the old value is unknown
    rebuilt.save()

    assert_access_token_rejected(api, application, tokens["access_token"])
    assert account_events(user) == [("revoked", "account", "user deactivated")]


def test_saving_an_inactive_user_again_changes_nothing(
    browser, api, user, application, django_assert_num_queries
):
    offline_tokens(browser, api, application)
    user.is_active = False
    user.save()
    events = account_events(user)
    # A later token (say, restored from a backup) is not the receiver's business
    # on a save that deactivates nobody: it must cost one UPDATE and nothing else.
    reloaded = User.objects.get(pk=user.pk)
    reloaded.first_name = "Alice"
    with django_assert_num_queries(1):
        reloaded.save()
    with django_assert_num_queries(1):
        reloaded.save()
    assert account_events(user) == events


def test_saving_an_active_user_costs_one_query_and_revokes_nothing(
    browser, api, user, application, django_assert_num_queries
):
    tokens = offline_tokens(browser, api, application)
    reloaded = User.objects.get(pk=user.pk)
    reloaded.email = "alice@new.example"
    with django_assert_num_queries(1):
        reloaded.save()
    assert_refresh_works(api, application, tokens["refresh_token"])
    assert account_events(user) == []


def test_reactivated_then_deactivated_again_ends_access_again(browser, api, user, application):
    offline_tokens(browser, api, application)
    user.is_active = False
    user.save()
    user.is_active = True
    user.save()
    tokens = offline_tokens(browser, api, application)
    user.is_active = False
    user.save()
    # Access token first: presenting the revoked refresh token may let DOT delete its pair.
    assert_access_token_rejected(api, application, tokens["access_token"])
    assert_refresh_refused(api, application, tokens["refresh_token"])


def test_queryset_update_bypasses_signals_refresh_still_refused_then_service_ends_it(
    browser, api, user, application
):
    """Documented limit: ``update()`` sends no signal; is_active still refuses refreshes."""
    tokens = offline_tokens(browser, api, application)
    User.objects.filter(pk=user.pk).update(is_active=False)

    assert_refresh_refused(api, application, tokens["refresh_token"])
    # Nothing ran: the access token lives until it expires...
    assert_access_token_accepted(api, application, tokens["access_token"])
    # ...unless the site calls the service, as the documentation asks after a bulk update.
    result = services.end_user_offline_access(user, cause="user deactivated")
    assert result.consents == 1 and result.access_tokens >= 1
    assert_access_token_rejected(api, application, tokens["access_token"])
    assert account_events(user) == [("revoked", "account", "user deactivated")]


def test_deactivation_sends_the_app_signals(
    browser, api, user, application, django_capture_on_commit_callbacks
):
    offline_tokens(browser, api, application)
    with receiving(signals.consent_revoked) as revoked, receiving(signals.offline_tokens_revoked) as tokens:
        with django_capture_on_commit_callbacks(execute=True):
            user.is_active = False
            user.save()
    assert [(call["reason"], call["via"]) for call in revoked] == [("user deactivated", "account")]
    # revoke_offline_access may send a second, empty batch (its sweep of family rows).
    assert [(len(call["families"]), call["via"]) for call in tokens if call["families"]] == [(1, "account")]
    assert {call["via"] for call in tokens} == {"account"}


def test_deactivation_deletes_unexchanged_codes(user, application):
    code = get_code(logged_in(user), application, scope="openid")
    user.is_active = False
    user.save()
    assert not Grant.objects.filter(code=stored(code)).exists()


@pytest.mark.parametrize("families", [1, 6])
def test_ending_a_users_access_takes_a_fixed_number_of_queries(
    browser, api, user, application, other_application, families, django_assert_num_queries
):
    offline_tokens(browser, api, application)
    offline_tokens(browser, api, other_application)
    plain_access_token(user, application)
    add_token_families(Consent.objects.get(user=user, application=application), families)
    with django_assert_num_queries(END_USER_ACCESS_QUERIES):
        result = services.end_user_offline_access(user, cause="user deactivated")
    assert result.consents == 2
    assert result.refresh_tokens == families + 2
    assert live_tokens(user=user) == (0, 0, 0)


# Password change -------------------------------------------------------------------


def test_set_password_then_save_ends_offline_access(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    user.set_password(NEW_PASSWORD)
    user.save()
    # Access token first: presenting the revoked refresh token may let DOT delete its pair.
    assert_access_token_rejected(api, application, tokens["access_token"])
    assert_refresh_refused(api, application, tokens["refresh_token"])
    assert account_events(user) == [("revoked", "account", "password changed")]
    assert Consent.objects.get(user=user).end_reason == "password changed"


def test_password_change_view_ends_offline_access_and_keeps_the_session(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    response = browser.post(
        "/accounts/password_change/",
        {
            "old_password": factories.PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302, response.content
    # Access token first: presenting the revoked refresh token may let DOT delete its pair.
    assert_access_token_rejected(api, application, tokens["access_token"])
    assert_refresh_refused(api, application, tokens["refresh_token"])
    assert account_events(user) == [("revoked", "account", "password changed")]
    # Django keeps the changer's own session (update_session_auth_hash).
    assert browser.get("/accounts/password_change/").status_code == 200


def test_password_reset_confirm_view_ends_offline_access(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    stranger = Client()
    landing = stranger.get(f"/accounts/reset/{uid}/{default_token_generator.make_token(user)}/")
    assert landing.status_code == 302, landing.status_code  # to the set-password URL
    response = stranger.post(
        landing["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 302, response.content
    assert response["Location"] == "/accounts/reset/done/"
    assert_refresh_refused(api, application, tokens["refresh_token"])
    assert account_events(user) == [("revoked", "account", "password changed")]


def test_admin_password_form_ends_offline_access(browser, api, user, application, admin_user):
    tokens = offline_tokens(browser, api, application)
    response = logged_in(admin_user).post(
        f"/admin/auth/user/{user.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302, response.content
    assert User.objects.get(pk=user.pk).check_password(NEW_PASSWORD)
    assert_refresh_refused(api, application, tokens["refresh_token"])
    assert account_events(user) == [("revoked", "account", "password changed")]


def test_password_change_ends_web_access_tokens_too(browser, api, user, application):
    web_token = plain_access_token(user, application)
    user.set_password(NEW_PASSWORD)
    user.save()
    assert_access_token_rejected(api, application, web_token)


def test_setting_off_keeps_tokens_on_password_change(browser, api, user, application, settings):
    settings.OFFLINE_ACCESS = {"REVOKE_ON_PASSWORD_CHANGE": False}
    tokens = offline_tokens(browser, api, application)
    user.set_password(NEW_PASSWORD)
    user.save()
    assert_access_token_accepted(api, application, tokens["access_token"])
    assert_refresh_works(api, application, tokens["refresh_token"])
    assert account_events(user) == []


def test_setting_off_still_ends_access_on_deactivation(browser, api, user, application, settings):
    settings.OFFLINE_ACCESS = {"REVOKE_ON_PASSWORD_CHANGE": False}
    tokens = offline_tokens(browser, api, application)
    user.is_active = False
    user.save()
    assert_refresh_refused(api, application, tokens["refresh_token"])


def test_logging_in_saves_last_login_and_revokes_nothing(api, user, application):
    tokens = offline_tokens(logged_in(user), api, application)
    response = Client().post("/accounts/login/", {"username": "alice", "password": factories.PASSWORD})
    assert response.status_code == 302, response.content
    assert User.objects.get(pk=user.pk).last_login is not None
    assert_access_token_accepted(api, application, tokens["access_token"])
    assert_refresh_works(api, application, tokens["refresh_token"])
    assert account_events(user) == []


class UpgradedMD5Hasher(MD5PasswordHasher):
    """A "newer" hasher: logging in with an MD5 hash rehashes the password with it."""

    algorithm = "upgraded_md5"


def test_password_hash_upgrade_on_login_revokes_nothing(api, user, application, settings):
    tokens = offline_tokens(logged_in(user), api, application)
    settings.PASSWORD_HASHERS = [
        f"{__name__}.UpgradedMD5Hasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    response = Client().post("/accounts/login/", {"username": "alice", "password": factories.PASSWORD})
    assert response.status_code == 302, response.content
    assert User.objects.get(pk=user.pk).password.startswith("upgraded_md5$")  # the hash was upgraded
    assert_refresh_works(api, application, tokens["refresh_token"])
    assert account_events(user) == []


def test_django_exposes_the_raw_password_to_post_save_only_after_set_password(user):
    """The contract the password receiver relies on (Django 4.2, 5.2, 6.0).

    ``set_password`` keeps the raw password on ``_password`` until ``save()`` has
    sent post_save; a hash upgrade in ``check_password`` clears it first. If
    Django changes this, this test fails before the receiver silently stops.
    """
    seen = []

    def spy(sender, instance, **kwargs):
        seen.append(getattr(instance, "_password", None))

    post_save.connect(spy, sender=User, weak=False)
    try:
        user.set_password(NEW_PASSWORD)
        user.save()
        user.first_name = "Alice"
        user.save()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("django.contrib.auth.hashers.MD5PasswordHasher.must_update", lambda self, e: True)
            assert user.check_password(NEW_PASSWORD)  # rehashes and saves
    finally:
        post_save.disconnect(spy, sender=User)
    assert seen == [NEW_PASSWORD, None, None]
    assert user._password is None


# Deleting a client or a user ----------------------------------------------------------


def test_deleting_a_client_keeps_the_consent_history_with_its_id_and_name(
    browser, api, user, application, other_application, django_capture_on_commit_callbacks
):
    offline_tokens(browser, api, application)
    plain_access_token(user, application)
    kept = offline_tokens(browser, api, other_application)
    factories.EnduringConsentFactory(user=user, application=application)
    application_pk = application.pk
    application.name = "Calendar Sync 2"  # renamed after the consent was given
    application.save()

    with receiving(signals.consent_revoked) as revoked:
        with django_capture_on_commit_callbacks(execute=True):
            application.delete()

    consents = Consent.objects.filter(client_id="calendar-sync").order_by("kind")
    assert [(c.kind, c.application_id, c.client_name, c.status) for c in consents] == [
        ("enduring", None, "Calendar Sync 2", "revoked"),
        ("interactive", None, "Calendar Sync 2", "revoked"),
    ]
    events = ConsentEvent.objects.filter(consent__in=consents)
    # The factory-made enduring consent has no "granted" event; the screen-given one has.
    assert sorted(events.values_list("action", flat=True)) == ["granted", "revoked", "revoked"]
    assert set(events.filter(action="revoked").values_list("via", "reason")) == {("client", "client deleted")}
    # Receivers still read which client it was.
    assert sorted(call["consent"].client_name for call in revoked) == ["Calendar Sync 2"] * 2
    assert live_tokens(application_id=application_pk) == (0, 0, 0)
    assert not AccessToken.objects.filter(application_id=application_pk).exists()
    assert not RefreshToken.objects.filter(application_id=application_pk).exists()
    assert not OfflineTokenFamily.objects.filter(application_id=application_pk).exists()
    # Another client's tokens are untouched.
    assert_refresh_works(api, other_application, kept["refresh_token"])


def test_deleting_clients_in_bulk_ends_their_consents(browser, api, user, application, other_application):
    offline_tokens(browser, api, application)
    offline_tokens(browser, api, other_application)
    type(application).objects.all().delete()
    assert set(Consent.objects.values_list("client_id", "status", "application")) == {
        ("calendar-sync", "revoked", None),
        ("backup-tool", "revoked", None),
    }
    assert live_tokens() == (0, 0, 0)


def test_new_consents_record_the_client_id_and_name(browser, user, application, other_application):
    get_code(browser, application, prompt="consent")
    consent, _ = services.grant_enduring_consent(user=user, application=other_application, reason="contract")
    assert (consent.client_id, consent.client_name) == ("backup-tool", "Backup Tool")
    interactive = Consent.objects.get(application=application)
    assert (interactive.client_id, interactive.client_name) == ("calendar-sync", "Calendar Sync")


def test_deleting_a_user_leaves_no_token(browser, api, user, application, other_user):
    offline_tokens(browser, api, application)
    plain_access_token(user, application)
    others = offline_tokens(logged_in(other_user), api, application)
    user_pk = user.pk
    user.delete()
    assert not AccessToken.objects.filter(user_id=user_pk).exists()
    assert not RefreshToken.objects.filter(user_id=user_pk).exists()
    assert not OfflineTokenFamily.objects.filter(user_id=user_pk).exists()
    assert not Consent.objects.filter(user_id=user_pk).exists()  # SPEC C1: may cascade
    assert_refresh_works(api, application, others["refresh_token"])


def test_deleting_a_user_who_owns_a_client_others_consented_to(browser, api, user, other_user):
    owned = factories.ApplicationFactory(name="Alice's Tool", client_id="alices-tool", user=user)
    offline_tokens(browser, api, owned)  # the owner's own consent: deleted with her
    offline_tokens(logged_in(other_user), api, owned)
    user.delete()
    consent = Consent.objects.get()
    assert (consent.user, consent.application, consent.client_id, consent.status) == (
        other_user,
        None,
        "alices-tool",
        "revoked",
    )
    assert live_tokens() == (0, 0, 0)


# Readers of a consent whose client is gone -------------------------------------------------


@pytest.fixture
def orphaned_consent(browser, api, user, application):
    offline_tokens(browser, api, application)
    application.delete()
    return Consent.objects.get()


def test_admin_pages_show_a_deleted_clients_consent(orphaned_consent, admin_user, user):
    admin = logged_in(admin_user)
    changelist = admin.get("/admin/offline_access/consent/")
    assert changelist.status_code == 200
    assert "Calendar Sync" in changelist.content.decode()
    assert admin.get(f"/admin/offline_access/consent/{orphaned_consent.pk}/change/").status_code == 200
    page = admin.get(f"/admin/offline_access/consent/user/{user.pk}/")
    assert page.status_code == 200
    assert "Calendar Sync" in page.content.decode()
    assert admin.get("/admin/offline_access/consent/?q=calendar-sync").context["cl"].result_count == 1


def test_connected_apps_page_and_revoke_url_cope_with_a_deleted_client(orphaned_consent, browser):
    assert browser.get("/o/connected-apps/").status_code == 200
    response = browser.get(f"/o/connected-apps/{orphaned_consent.pk}/revoke/")
    assert response.status_code == 302
    response = browser.post(f"/o/connected-apps/{orphaned_consent.pk}/revoke/")
    assert response.status_code == 302


def test_checks_refuse_a_non_boolean_revoke_on_password_change(settings):
    from offline_access.checks import check_settings

    settings.OFFLINE_ACCESS = {"REVOKE_ON_PASSWORD_CHANGE": "no"}
    errors = check_settings(None)
    assert [error.id for error in errors] == ["offline_access.E003"]
    assert "REVOKE_ON_PASSWORD_CHANGE" in errors[0].msg
    settings.OFFLINE_ACCESS = {"REVOKE_ON_PASSWORD_CHANGE": False}
    assert check_settings(None) == []


def test_staff_api_lists_a_deleted_clients_consent_with_its_id_and_name(orphaned_consent, admin_user):
    from .test_api import session_client

    response = session_client(admin_user).get("/api/offline-access/consents/")
    assert response.status_code == 200, response.content
    (row,) = response.json()["results"]
    assert row["application"] == {"client_id": "calendar-sync", "name": "Calendar Sync"}
    assert row["state"] == "revoked"
    assert row["end_reason"] == "client deleted"


def test_migration_records_the_client_of_existing_consents(user, application, other_application):
    import importlib
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("offline_access.migrations.0005_account_events")
    first = factories.ConsentFactory(user=user, application=application)
    second = factories.EnduringConsentFactory(user=user, application=other_application)
    Consent.objects.update(client_id="", client_name="")  # rows as they were before the migration

    migration.record_client_names(apps, SimpleNamespace(connection=connection))

    assert set(Consent.objects.values_list("pk", "client_id", "client_name")) == {
        (first.pk, "calendar-sync", "Calendar Sync"),
        (second.pk, "backup-tool", "Backup Tool"),
    }
