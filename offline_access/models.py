"""Consent records, their history, and the refresh-token families issued under them.

DOT already stores applications and tokens; this module adds only what it lacks:
who agreed to offline access, for which client, until when (SPEC C1-C4), and which
refresh-token family (a device or installation) each consent stands behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.models import F, Func, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from .client_metadata import PAGE_URI_MAX_LENGTH, validate_page_uri

if TYPE_CHECKING:
    from .services import RevocationResult


def _refresh_tokens_of_families(families):
    return get_refresh_token_model().objects.filter(token_family__in=families.values("token_family"))


def _count(queryset):
    """A scalar subquery counting ``queryset``'s rows: one query for a whole page of rows."""
    counted = queryset.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")
    return Coalesce(Subquery(counted), 0)


class _CountUpTo(Subquery):
    """A scalar subquery counting at most ``limit`` of ``queryset``'s rows (a bounded count)."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) AS bounded)"

    def __init__(self, queryset, limit: int):
        super().__init__(queryset.order_by().values("pk")[:limit], output_field=models.IntegerField())


class ConsentQuerySet(models.QuerySet):
    """Consents; ``update()`` and ``bulk_create()`` keep :attr:`Consent.active_slot` in step with status."""

    def update(self, **kwargs):
        if "status" in kwargs and "active_slot" not in kwargs and isinstance(kwargs["status"], str):
            kwargs["active_slot"] = Consent.slot_for(kwargs["status"])
        return super().update(**kwargs)

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for consent in objs:
            consent.active_slot = Consent.slot_for(consent.status)
        return super().bulk_create(objs, *args, **kwargs)

    def active(self, now=None):
        """Consents that are in force now: not revoked, not expired, not ended."""
        now = now or timezone.now()
        return self.filter(status=Consent.Status.ACTIVE).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )

    def in_state(self, state: str, now=None):
        """Consents in ``state`` as users see it: a consent past its expiry is expired."""
        now = now or timezone.now()
        if state == Consent.Status.ACTIVE:
            return self.active(now)
        if state == Consent.Status.EXPIRED:
            return self.filter(
                Q(status=Consent.Status.EXPIRED) | Q(status=Consent.Status.ACTIVE, expires_at__lte=now)
            )
        if state == Consent.Status.REVOKED:
            return self.filter(status=Consent.Status.REVOKED)
        raise ValueError(f"Unknown consent state {state!r}.")

    def with_usage(self, count_up_to: int | None = None):
        """Annotate ``live_tokens`` (unrevoked refresh tokens) and ``last_used`` (latest issue).

        Correlated subqueries, so a page of consents costs one query however many
        rows it shows. ``count_up_to``: count at most that many live tokens plus one
        (``live_tokens > count_up_to`` then means "more"), so a consent behind
        thousands of devices costs its row a bounded count. MySQL and MariaDB count
        them all: they refuse the outer reference inside the bounded count's derived
        table ("Unknown column").
        """
        families = OfflineTokenFamily.objects.filter(consent=OuterRef(OuterRef("pk")))
        tokens = _refresh_tokens_of_families(families)
        live = tokens.filter(revoked__isnull=True)
        if count_up_to is not None and connections[self.db].vendor != "mysql":
            live_tokens: Any = _CountUpTo(live, count_up_to + 1)
        else:
            live_tokens = _count(live)
        return self.annotate(
            live_tokens=live_tokens,
            last_used=Subquery(tokens.order_by("-created").values("created")[:1]),
        )


class Consent(models.Model):
    """A user's agreement that a client may keep access while the user is away.

    One row per agreement. Interactive consents come from the consent screen
    (SPEC C2): at most one active row per user and client, renewed on each
    approval. Enduring consents are recorded by an administrator (SPEC C3) and let
    ``offline_access`` through without ``prompt=consent``. Rows are never deleted
    by the app: revocation and expiry change ``status`` and keep the history.
    """

    class Kind(models.TextChoices):
        INTERACTIVE = "interactive", _("Interactive (consent screen)")
        ENDURING = "enduring", _("Enduring (recorded by an administrator)")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        REVOKED = "revoked", _("Revoked")
        EXPIRED = "expired", _("Expired")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="offline_access_consents",
        verbose_name=_("user"),
        help_text=_("The user whose account the client may access while they are away."),
    )
    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        # The history outlives the client (SPEC C1): deleting a client ends its
        # consents first (account_events.py), then only this link goes.
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="offline_access_consents",
        verbose_name=_("client"),
        help_text=_(
            "The OAuth client (DOT application) the consent was given to. Empty once the client is deleted."
        ),
    )
    client_id = models.CharField(
        _("client ID"),
        max_length=255,
        blank=True,
        help_text=_("The client's ID as it was: recorded when given, updated when the client is deleted."),
    )
    client_name = models.CharField(
        _("client name"),
        max_length=255,
        blank=True,
        help_text=_("The client's name as it was: recorded when given, updated when the client is deleted."),
    )
    kind = models.CharField(
        _("kind"),
        max_length=16,
        choices=Kind.choices,
        help_text=_(
            "Interactive: the user approved a consent screen. Enduring: an administrator recorded it."
        ),
    )
    scope = models.TextField(
        _("scopes"),
        help_text=_("Space-separated scopes covered by this consent, as approved."),
    )
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=Status.choices,
        default=Status.ACTIVE,
        help_text=_("Active consents are in force unless past their expiry."),
    )
    #: True while ``status`` is active, NULL once it ended: the handle of the constraint
    #: "one active consent per user, client and kind". A condition on ``status`` would say
    #: it directly, but MySQL and MariaDB have no partial unique indexes (Django skips
    #: such a constraint there), while every database lets NULLs repeat in a unique index.
    #: ``save()``, ``update(status=...)`` and ``bulk_create()`` set it.
    active_slot = models.BooleanField(null=True, default=True, editable=False)
    created_at = models.DateTimeField(
        _("first given at"), default=timezone.now, help_text=_("When the consent was first given.")
    )
    granted_at = models.DateTimeField(
        _("given at"),
        default=timezone.now,
        help_text=_("When the consent was last given or renewed."),
    )
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("given by"),
        help_text=_("Who gave it: the user on the consent screen, or the administrator. Empty for commands."),
    )
    reason = models.TextField(
        _("reason"),
        blank=True,
        help_text=_("Why an enduring consent was recorded (the agreement it stands for)."),
    )
    expires_at = models.DateTimeField(
        _("expires at"),
        null=True,
        blank=True,
        help_text=_("After this moment the consent no longer covers offline access. Empty: no expiry."),
    )
    ended_at = models.DateTimeField(
        _("ended at"),
        null=True,
        blank=True,
        help_text=_("When the consent was revoked or its expiry was processed."),
    )
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("ended by"),
        help_text=_("Who revoked it. Empty for expiry and for commands."),
    )
    end_reason = models.TextField(
        _("end reason"), blank=True, help_text=_("Why the consent was revoked or ended.")
    )

    objects = ConsentQuerySet.as_manager()

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        ordering = ["-granted_at", "-pk"]
        constraints = [
            # SPEC C2/C3: one record in force per user, client and kind; a new
            # approval renews it instead of piling up rows.
            models.UniqueConstraint(
                fields=["user", "application", "kind", "active_slot"],
                name="offline_access_one_active_consent_per_kind",
            ),
        ]
        indexes = [
            models.Index(fields=["application", "status"]),
            # The admin's default order (-granted_at, -pk), alone and per client: a page of
            # the changelist reads 100 index entries instead of sorting every row (issue 12).
            models.Index(fields=["granted_at", "id"], name="offline_acc_granted_idx"),
            models.Index(fields=["application", "granted_at", "id"], name="offline_acc_app_granted_idx"),
        ]
        permissions = [
            ("revoke_consent", "Can revoke consents and their offline tokens"),
            ("grant_enduring_consent", "Can grant enduring consents"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} consent #{self.pk}"

    def save(self, *args, **kwargs) -> None:
        self.active_slot = self.slot_for(self.status)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "status" in update_fields:
            kwargs["update_fields"] = {*update_fields, "active_slot"}
        if self._state.adding and self.application_id is not None and not self.client_id:
            # The audit keeps naming the client after it is deleted. Only a new row
            # reads the application: a renewal must not cost a query for it.
            application = self.application
            assert application is not None
            self.client_id, self.client_name = application.client_id, application.name
        super().save(*args, **kwargs)

    @staticmethod
    def slot_for(status: str) -> bool | None:
        """The :attr:`active_slot` of a consent in ``status``."""
        return True if status == Consent.Status.ACTIVE else None

    @property
    def client(self):
        """The client as pages show it: the application, or what was recorded of a deleted one.

        Both have ``client_id`` and ``name``.
        """
        if self.application_id is not None:
            return self.application
        return DeletedClient(self.client_id, self.client_name)

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()

    def get_state_display(self) -> str:
        return str(self.Status(self.state()).label)

    def state(self, now=None) -> str:
        """``active``, ``revoked`` or ``expired``, with a passed expiry counting as expired."""
        now = now or timezone.now()
        if self.status == self.Status.ACTIVE and self.expires_at is not None and self.expires_at <= now:
            return self.Status.EXPIRED
        return self.status


@dataclass(frozen=True)
class DeletedClient:
    """What a consent recorded of its client once that client was deleted."""

    client_id: str
    name: str

    def __str__(self) -> str:
        label = _("%(name)s (deleted client %(client_id)s)")
        return str(label) % {"name": self.name, "client_id": self.client_id}


class EnduringConsent(Consent):
    """Enduring consents only: their own admin screen, where administrators grant them."""

    class Meta:
        proxy = True
        verbose_name = _("enduring consent")
        verbose_name_plural = _("enduring consents")


class ConsentEvent(models.Model):
    """One entry of a consent's history (SPEC C4): what happened, who did it, when, why."""

    class Action(models.TextChoices):
        GRANTED = "granted", _("Granted")
        RENEWED = "renewed", _("Renewed")
        REVOKED = "revoked", _("Revoked")
        EXPIRED = "expired", _("Expired")
        DEVICES_REVOKED = "devices_revoked", _("Devices revoked (consent kept)")
        # RFC 6749 4.1.2: a code presented twice revokes the tokens it produced.
        CODE_REPLAYED = "code_replayed", _("Authorization code replayed (its tokens revoked)")

    class Via(models.TextChoices):
        CONSENT_SCREEN = "consent_screen", _("Consent screen")
        ADMIN = "admin", _("Django admin")
        COMMAND = "command", _("Management command")
        API = "api", _("REST API")
        USER = "user", _("The user's connected-apps page")
        SYSTEM = "system", _("Automatic (expiry, code replay)")
        ACCOUNT = "account", _("Account change (deactivation, password change)")
        CLIENT = "client", _("Client deleted")
        # RFC 7009: the client revoked one of its tokens, which ends that token's family.
        REVOCATION_ENDPOINT = "revocation", _("The client, at the revocation endpoint (RFC 7009)")

    consent = models.ForeignKey(
        Consent,
        on_delete=models.CASCADE,
        related_name="events",
        verbose_name=_("consent"),
        help_text=_("The consent this event belongs to."),
    )
    action = models.CharField(
        _("action"), max_length=16, choices=Action.choices, help_text=_("What happened.")
    )
    via = models.CharField(_("via"), max_length=16, choices=Via.choices, help_text=_("Where it happened."))
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
        help_text=_("Who did it; empty for commands and automatic expiry."),
    )
    at = models.DateTimeField(_("at"), default=timezone.now, help_text=_("When it happened."))
    reason = models.TextField(_("reason"), blank=True, help_text=_("Why, as given by the actor."))
    scope = models.TextField(_("scopes"), blank=True, help_text=_("The consent's scopes at that moment."))

    class Meta:
        verbose_name = _("consent event")
        verbose_name_plural = _("consent events")
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} via {self.get_via_display()}"


class OfflineTokenFamilyQuerySet(models.QuerySet):
    def with_activity(self):
        """Annotate ``last_refreshed`` (newest refresh token) and ``live_tokens`` (unrevoked ones)."""
        tokens = get_refresh_token_model().objects.filter(token_family=OuterRef("token_family"))
        return self.annotate(
            last_refreshed=Subquery(tokens.order_by("-created").values("created")[:1]),
            live_tokens=_count(tokens.filter(revoked__isnull=True)),
        )

    def live(self):
        """Families that can still refresh: not ended and holding an unrevoked refresh token."""
        tokens = get_refresh_token_model().objects.filter(
            token_family=OuterRef("token_family"), revoked__isnull=True
        )
        return self.filter(ended_at__isnull=True).filter(models.Exists(tokens))

    def ended(self):
        """Families that cannot refresh any more: the complement of :meth:`live`, row by row.

        Tested on each row (no ``NOT IN`` over the ids of every live family), so a
        changelist page of ended families reads only the rows it shows.
        """
        tokens = get_refresh_token_model().objects.filter(
            token_family=OuterRef("token_family"), revoked__isnull=True
        )
        return self.filter(Q(ended_at__isnull=False) | ~models.Exists(tokens))


class OfflineTokenFamily(models.Model):
    """The refresh tokens of one device or installation, tied to the consent behind them.

    DOT keeps ``token_family`` constant across rotations, so one row here follows a
    refresh token through all its rotations. It carries what DOT lacks for SPEC P6:
    the consent behind the tokens and when the family was first issued (the start
    of the absolute lifetime). The last use is not stored again: DOT's newest
    refresh and access token rows already say when the family was last refreshed.
    """

    token_family = models.UUIDField(
        _("token family"), unique=True, help_text=_("DOT's token_family shared by every rotation.")
    )
    consent = models.ForeignKey(
        Consent,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="token_families",
        verbose_name=_("consent"),
        help_text=_("The consent the refresh token was issued under. Empty means none: it cannot refresh."),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("user"),
        help_text=_("The user the tokens act for."),
    )
    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("client"),
        help_text=_("The client holding the tokens."),
    )
    created_at = models.DateTimeField(
        _("first issued at"), default=timezone.now, help_text=_("Start of the absolute lifetime.")
    )
    ended_at = models.DateTimeField(
        _("ended at"), null=True, blank=True, help_text=_("When the family was revoked or ran out.")
    )
    code_hash = models.CharField(
        _("authorization code (keyed hash)"),
        max_length=64,
        blank=True,
        default="",
        editable=False,
        db_index=True,
        help_text=_(
            "Keyed hash of the authorization code that started this family (never the code itself): "
            "a replay of that code revokes the family (RFC 6749 4.1.2). Empty for other grants."
        ),
    )

    auth_time = models.DateTimeField(
        _("authenticated at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "When the user authenticated for the grant that started this family: the auth_time of "
            "every ID token issued on refresh (OIDC Core 12.2). Empty for families from before it "
            "was recorded."
        ),
    )

    dpop_jkt = models.CharField(
        _("DPoP key (thumbprint)"),
        max_length=43,
        blank=True,
        default="",
        editable=False,
        help_text=_(
            "RFC 7638 SHA-256 thumbprint of the DPoP key this device's refresh tokens are bound to "
            "(RFC 9449 5): every refresh must be signed with that key. Empty: not key-bound."
        ),
    )

    objects = OfflineTokenFamilyQuerySet.as_manager()

    class Meta:
        verbose_name = _("offline token family")
        verbose_name_plural = _("offline token families")
        indexes = [
            models.Index(fields=["user", "application"]),
            # The admin's search finds a device by its key's thumbprint (exact match), and
            # its changelist sorts by first issue.
            models.Index(fields=["dpop_jkt"], name="offline_acc_dpop_jkt_idx"),
            models.Index(fields=["created_at"], name="offline_acc_family_created_idx"),
        ]
        permissions = [("revoke_token_family", "Can revoke offline token families (devices)")]

    def __str__(self) -> str:
        return f"Offline token family #{self.pk}"


class ClientPolicyQuerySet(models.QuerySet):
    """Bulk writes that can bar a client revoke its offline access, as ``ClientPolicy.save()`` does."""

    def update(self, **kwargs):
        if "allow_offline_access" not in kwargs:
            return super().update(**kwargs)
        with transaction.atomic(using=self.db, savepoint=False):
            # Fixed (and locked) before the update: the filter may test the very field it
            # changes, and re-reading it afterwards would find nothing to revoke.
            pks = list(self.select_for_update().values_list("pk", flat=True))
            updated = super().update(**kwargs)
            barred = ClientPolicy.objects.filter(pk__in=pks, allow_offline_access=False)
            if barred.exists():
                _bar_clients(barred.values("application_id"))
            return updated

    def bulk_create(self, objs, *args, **kwargs):
        with transaction.atomic(using=self.db, savepoint=False):
            created = super().bulk_create(objs, *args, **kwargs)
            barred = [policy.application_id for policy in created if not policy.allow_offline_access]
            if barred:
                _bar_clients(barred)
            return created

    # bulk_update() goes through update() above.


def _bar_clients(applications, *, actor=None, via: str = ConsentEvent.Via.COMMAND) -> RevocationResult:
    from . import services  # imported here: services imports this module

    return services.bar_clients(applications, actor=actor, via=via)


def _page_uri_field(verbose_name, help_text) -> models.CharField:
    """One of the client's page addresses: optional, checked by the app's own rule."""
    return models.CharField(
        verbose_name,
        max_length=PAGE_URI_MAX_LENGTH,
        blank=True,
        validators=[validate_page_uri],
        help_text=help_text,
    )


class ClientPolicy(models.Model):
    """Offline-access rules of one client, overriding the global settings, and what the
    consent screen shows of the client besides its name (logo and pages, issue 13).

    A client without a row follows the defaults: it may get offline access, with
    ``OFFLINE_ACCESS["REFRESH_TOKEN_IDLE_TIMEOUT"]`` and
    ``OFFLINE_ACCESS["REFRESH_TOKEN_ABSOLUTE_LIFETIME"]``.

    Saving a policy that bars the client (``allow_offline_access`` off) revokes the
    client's consents in force and every offline token it holds
    (:func:`offline_access.services.bar_clients`; in the saving transaction, or in
    batches after the bar commits when saved outside a transaction): lifting the bar later
    revives nothing. ``save()``, ``objects.create()``, ``update()``, ``bulk_create()``
    and ``bulk_update()`` all do it; only raw SQL bypasses it. Set ``changed_by``
    (and ``changed_via``, a :class:`ConsentEvent.Via`) before saving to name the
    acting administrator in the consents' events; the admin does.
    """

    #: Who is saving the policy, for the events a bar writes (not stored here).
    changed_by: Any = None
    #: Where it is saved: plain code and shells count as a command.
    changed_via: str = ConsentEvent.Via.COMMAND
    #: What the last save() revoked by barring the client (None when it barred nothing).
    bar_revocation: RevocationResult | None = None

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="offline_access_policy",
        verbose_name=_("client"),
        help_text=_("The OAuth client (DOT application) these rules apply to."),
    )
    allow_offline_access = models.BooleanField(
        _("may get offline access"),
        default=True,
        help_text=_(
            "When off, the client never gets a refresh token: offline_access is dropped from its "
            "requests and its existing refresh tokens stop working."
        ),
    )
    refresh_token_idle_timeout = models.DurationField(
        _("idle timeout"),
        null=True,
        blank=True,
        help_text=_("Overrides the global idle timeout for this client (e.g. 30 00:00:00 for 30 days)."),
    )
    refresh_token_absolute_lifetime = models.DurationField(
        _("absolute lifetime"),
        null=True,
        blank=True,
        help_text=_("Overrides the global absolute lifetime for this client."),
    )

    require_dpop = models.BooleanField(
        _("require DPoP for refresh tokens"),
        default=False,
        help_text=_(
            "When on, every code exchange, device poll and refresh of this client must carry a DPoP "
            "proof (RFC 9449): a public client's refresh tokens are then always bound to its key, "
            "and every access token is DPoP-bound. Requests without a proof get invalid_dpop_proof."
        ),
    )

    # What the consent screen shows of the client besides its name (issue 13), under the
    # names of OIDC Dynamic Client Registration 1.0, section 2. Checked when saved and
    # again when shown (offline_access.client_metadata). CharField, not URLField: the
    # rule is the app's own (https only), and forms do not guess a scheme.
    logo_uri = _page_uri_field(
        _("logo"),
        _(
            "Address of the client's logo (https://), shown small on the consent screen next to the "
            "client's name, never instead of it. Leave empty for no logo."
        ),
    )
    client_uri = _page_uri_field(
        _("home page"), _("The client's home page (https://), linked from the consent screen.")
    )
    policy_uri = _page_uri_field(
        _("privacy policy"),
        _("How the client uses people's data (https://), linked from the consent screen."),
    )
    tos_uri = _page_uri_field(
        _("terms of service"), _("The client's terms of service (https://), linked from the consent screen.")
    )

    objects = ClientPolicyQuerySet.as_manager()

    class Meta:
        verbose_name = _("offline access policy")
        verbose_name_plural = _("offline access policies")

    def __str__(self) -> str:
        return f"Offline access policy #{self.pk}"

    def save(self, *args, **kwargs) -> None:
        """Save, and when the client is barred, revoke its offline access.

        Inside a transaction (the admin's change form, a test): in that transaction, so
        the bar and the revocation commit together. Outside one: the bar commits first,
        then the revocation runs in short batches (``services.revoke_client_offline_access``).
        """
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        update_fields = kwargs.get("update_fields")
        # A save of other fields only has not written the flag: the row's own value stands.
        barring = (update_fields is None or "allow_offline_access" in update_fields) and (
            not self.allow_offline_access
        )
        self.bar_revocation = None
        if barring and not transaction.get_connection(using).in_atomic_block:
            # Autocommit: the bar commits first (from then on no refresh of the client
            # succeeds and no new family is covered by a consent), then its consents and
            # tokens are revoked in short batches. A run cut short leaves the rest to the
            # next save of the barred policy (idempotent).
            with transaction.atomic(using=using):
                super().save(*args, **kwargs)
            self.bar_revocation = _bar_clients(
                [self.application_id], actor=self.changed_by, via=self.changed_via
            )
            return
        # No savepoint: a failed revocation must undo the bar's transaction as a whole.
        with transaction.atomic(using=using, savepoint=False):
            super().save(*args, **kwargs)
            if barring:
                self.bar_revocation = _bar_clients(
                    [self.application_id], actor=self.changed_by, via=self.changed_via
                )


class ConsentFormUse(models.Model):
    """One consent form (a rendering of the consent screen) that has been posted.

    The form is signed (SPEC P3), which stops changes but not a second POST of
    the same form: each rendering carries a random nonce, and its row here makes
    every later POST of it fail on the unique constraint, across all workers.
    Rows are kept only while the form's signature could still be accepted
    (``CONSENT_FORM_MAX_AGE``); later ones are deleted as new forms are posted.
    """

    nonce = models.CharField(
        _("nonce"), max_length=64, unique=True, help_text=_("The random value signed into the form.")
    )
    expires_at = models.DateTimeField(
        _("expires at"),
        db_index=True,
        help_text=_("After this moment the form's signature has expired anyway; the row may go."),
    )

    class Meta:
        verbose_name = _("used consent form")
        verbose_name_plural = _("used consent forms")

    def __str__(self) -> str:
        return f"Used consent form #{self.pk}"


class SealedSuccessorPair(models.Model):
    """The pair a rotation issued, sealed for a retry within DOT's grace period (issue 9).

    The database keeps tokens as keyed hashes only, so a client that retries a
    refresh because it lost the answer cannot be given the pair again from them.
    The rotation stores that pair here, encrypted under a key derived from the
    *predecessor's* plaintext (:func:`offline_access.token_storage.seal_pair`),
    which only its holder knows: the retry opens it, a database copy cannot.
    Written in the rotation's transaction; gone with its refresh token, and
    useless once the grace period is over (``manage.py hash_stored_tokens``
    deletes those rows).
    """

    predecessor = models.OneToOneField(
        oauth2_settings.REFRESH_TOKEN_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="+",
        verbose_name=_("rotated refresh token"),
    )
    predecessor_id: int  # the swappable target is a string, so mypy cannot infer the column
    sealed = models.BinaryField(_("sealed successor pair"))
    created_at = models.DateTimeField(_("sealed at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("sealed successor pair")
        verbose_name_plural = _("sealed successor pairs")

    def __str__(self) -> str:
        return f"Sealed successor of refresh token #{self.predecessor_id}"


class GrantAuthentication(models.Model):
    """When the user behind an authorization code or device code authenticated.

    DOT's Grant and DeviceGrant have no field for it, and the code is exchanged
    without the browser session, so the authorization endpoint (or the device
    approval) writes the session's authentication time here, keyed by the code's
    stored value (its keyed hash, never the code). The code exchange reads it in
    the same query as the code, and the ID token and the token family get it
    (OIDC Core 1.0, 2 ``auth_time``). Rows outlive the code only until it would
    have expired; later ones are deleted as new rows are written.
    """

    code = models.CharField(
        _("code (stored value)"),
        max_length=255,
        unique=True,
        editable=False,
        help_text=_("The authorization code or device code as stored by DOT: its keyed hash."),
    )
    auth_time = models.DateTimeField(
        _("authenticated at"),
        null=True,
        help_text=_(
            "When the browser session that approved the code authenticated. Empty only on rows "
            "kept for dpop_jkt alone (no authentication time known)."
        ),
    )
    expires_at = models.DateTimeField(
        _("expires at"),
        db_index=True,
        help_text=_("When the code expires; after that the row is no longer needed."),
    )
    dpop_jkt = models.CharField(
        _("DPoP key (thumbprint)"),
        max_length=43,
        blank=True,
        default="",
        editable=False,
        help_text=_(
            "The authorization request's dpop_jkt (RFC 9449 10): the code is exchanged only with a "
            "DPoP proof signed by that key. Empty: the request named none."
        ),
    )

    class Meta:
        verbose_name = _("code authentication time")
        verbose_name_plural = _("code authentication times")

    def __str__(self) -> str:
        return f"Authentication time of code #{self.pk}"


class DPoPBoundAccessToken(models.Model):
    """An access token bound to a DPoP key (RFC 9449 6): usable only with proofs of that key.

    DOT's access token model has no room for the binding, so it lives here, keyed by
    the token's ``token_checksum`` (DOT's unique lookup column, itself a hash of the
    stored keyed hash; never the token). Resource requests read it in the same query
    that loads the token. No foreign key: deleting access tokens (every rotation
    does) must not cost a query here; rows are deleted once their token has expired.
    """

    token_checksum = models.CharField(
        _("access token checksum"),
        max_length=64,
        unique=True,
        editable=False,
        help_text=_("DOT's token_checksum of the bound access token (a hash, never the token)."),
    )
    jkt = models.CharField(
        _("DPoP key (thumbprint)"),
        max_length=43,
        editable=False,
        help_text=_("RFC 7638 SHA-256 thumbprint of the key every use of the token must prove."),
    )
    expires_at = models.DateTimeField(
        _("expires at"), db_index=True, help_text=_("When the access token expires; then the row goes too.")
    )

    class Meta:
        verbose_name = _("DPoP-bound access token")
        verbose_name_plural = _("DPoP-bound access tokens")

    def __str__(self) -> str:
        return f"DPoP binding #{self.pk}"
