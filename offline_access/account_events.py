"""Account events that end offline access: a user deactivated, a password changed, a client deleted.

An offline token outlives the browser session by design, so the events that
should end it must reach it explicitly:

- A user saved with ``is_active`` turning False loses every token at once, not
  only at the next refresh (which ``is_active`` already refuses): access tokens
  stop working at userinfo and at resource servers too.
- A password changed through ``set_password()`` then ``save()`` (Django's
  password change and reset views, the admin's password form, a shell) ends the
  user's offline access and every token issued before it, unless
  ``OFFLINE_ACCESS["REVOKE_ON_PASSWORD_CHANGE"]`` is False. Django's own hash
  upgrade on login and a ``last_login`` update are not password changes.
- A client being deleted has its active consents revoked first; the consents and
  their events stay, with the client's id and name, for the audit (SPEC C1).

Limits: ``QuerySet.update(is_active=False)`` and fixture loading (``raw``) send
none of these signals. Refreshes are still refused (the validator checks
``is_active``), but access tokens then live until they expire unless the site
calls :func:`offline_access.services.end_user_offline_access`.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db.models import Model
from django.db.models.signals import post_init, post_save, pre_delete, pre_save
from oauth2_provider.models import get_application_model

from . import services
from .conf import settings

#: Reasons recorded on the consents and their events (the audit trail is not translated).
USER_DEACTIVATED = "user deactivated"
PASSWORD_CHANGED = "password changed"
CLIENT_DELETED = "client deleted"

# Kept in the instance's __dict__ so that they never reach the database or a form.
_WAS_ACTIVE = "_offline_access_was_active"
_DEACTIVATING = "_offline_access_deactivating"


def remember_is_active(sender, instance, **kwargs) -> None:
    """post_init: note ``is_active`` as loaded, so that a save can tell a deactivation without a query.

    A deferred ``is_active`` is not read here (that would cost a query per user
    loaded); it is recorded as unknown.
    """
    instance.__dict__[_WAS_ACTIVE] = instance.__dict__.get("is_active")


def notice_deactivation(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """pre_save: mark a save that turns ``is_active`` from True to False.

    Only a save that writes ``is_active = False`` to an existing row is looked at,
    so saving an active user (a login's ``last_login``) costs nothing. The value
    remembered at load decides; when there is none (``is_active`` was deferred,
    or the instance was built in memory with a primary key) one indexed query
    asks the database.
    """
    instance.__dict__.pop(_DEACTIVATING, None)
    if raw or instance.pk is None or instance.__dict__.get("is_active", True) is not False:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    was_active = instance.__dict__.get(_WAS_ACTIVE)
    if instance._state.adding or was_active is None:
        manager = sender._base_manager.using(kwargs.get("using") or instance._state.db)
        was_active = manager.filter(pk=instance.pk, is_active=True).exists()
    if was_active:
        instance.__dict__[_DEACTIVATING] = True


def end_access_after_account_change(sender, instance, created=False, raw=False, **kwargs) -> None:
    """post_save: end the user's access after a deactivation or a password change.

    Django's ``AbstractBaseUser.set_password`` keeps the raw password on
    ``_password`` until ``save()`` has sent post_save, and its hash upgrade in
    ``check_password`` clears it first; tests/test_account_events.py fails if that
    changes.
    """
    deactivating = instance.__dict__.pop(_DEACTIVATING, False)
    instance.__dict__[_WAS_ACTIVE] = instance.__dict__.get("is_active")
    if raw or created:
        return  # a new user holds nothing to end
    if deactivating:
        services.end_user_offline_access(instance, cause=USER_DEACTIVATED)
    elif getattr(instance, "_password", None) is not None and settings.REVOKE_ON_PASSWORD_CHANGE:
        services.end_user_offline_access(instance, cause=PASSWORD_CHANGED)


def end_consents_of_deleted_client(sender, instance, **kwargs) -> None:
    """pre_delete: revoke the client's consents before the database unlinks them (same transaction)."""
    services.end_consents_of_deleted_client(instance, reason=CLIENT_DELETED)


def _with_subclasses(model: type[Model]) -> list[type[Model]]:
    """The model and its proxies and children: Django sends their signals with their own class."""
    return [candidate for candidate in apps.get_models() if issubclass(candidate, model)]


def connect() -> None:
    """Connect the receivers (AppConfig.ready)."""
    for user_model in _with_subclasses(get_user_model()):
        uid = f"offline_access.account_events.{user_model._meta.label_lower}"
        post_init.connect(remember_is_active, sender=user_model, dispatch_uid=uid)
        pre_save.connect(notice_deactivation, sender=user_model, dispatch_uid=uid)
        post_save.connect(end_access_after_account_change, sender=user_model, dispatch_uid=uid)
    for application_model in _with_subclasses(get_application_model()):
        uid = f"offline_access.account_events.{application_model._meta.label_lower}"
        pre_delete.connect(end_consents_of_deleted_client, sender=application_model, dispatch_uid=uid)
