from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.validators import ProhibitNullCharactersValidator
from django.utils import timezone
from oauth2_provider.models import get_application_model
from oauth2_provider.scopes import get_scopes_backend
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from ..models import Consent, OfflineTokenFamily


class ApplicationField(serializers.Serializer):
    client_id = serializers.CharField()
    name = serializers.CharField()


class ScopesField(serializers.Field):
    """Each scope with its description, as the consent screen shows it."""

    def to_representation(self, value):
        descriptions = self.context.setdefault("scope_descriptions", get_scopes_backend().get_all_scopes())
        return [{"name": name, "description": descriptions.get(name, name)} for name in value.split()]


class ConsentSerializer(serializers.ModelSerializer):
    # A deleted client's consents show the client id and name they recorded.
    application = ApplicationField(source="client", read_only=True)
    scopes = ScopesField(source="scope", read_only=True)
    state = serializers.SerializerMethodField()
    last_used = serializers.DateTimeField(read_only=True, allow_null=True)
    live_tokens = serializers.IntegerField(read_only=True)

    class Meta:
        model = Consent
        fields = [
            "id",
            "application",
            "kind",
            "scopes",
            "state",
            "created_at",
            "granted_at",
            "expires_at",
            "last_used",
            "live_tokens",
            "ended_at",
        ]
        read_only_fields = fields

    def get_state(self, consent) -> str:
        return consent.state()


class StaffConsentSerializer(ConsentSerializer):
    user = serializers.SerializerMethodField()
    reason = serializers.CharField(read_only=True)
    end_reason = serializers.CharField(read_only=True)

    class Meta(ConsentSerializer.Meta):
        fields = ["user", *ConsentSerializer.Meta.fields, "reason", "end_reason"]
        read_only_fields = fields

    def get_user(self, consent) -> dict:
        return {"id": consent.user_id, "username": consent.user.get_username()}


class DeviceSerializer(serializers.ModelSerializer):
    application = ApplicationField(read_only=True)
    first_issued = serializers.DateTimeField(source="created_at", read_only=True)
    last_refreshed = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = OfflineTokenFamily
        fields = ["id", "application", "consent", "first_issued", "last_refreshed"]
        read_only_fields = fields


class StorableSlugField(serializers.SlugRelatedField):
    """A slug that is text a database can compare, checked before the lookup.

    PostgreSQL refuses a NUL in a query parameter (a 500, not "does not exist"), and
    no driver encodes a lone surrogate, which JSON can spell ("\\ud800"). The same
    checks and messages as DRF's CharField.
    """

    default_error_messages = {"not_text": "Not a valid string."}
    text_validators = (ProhibitNullCharactersValidator(), ProhibitSurrogateCharactersValidator())

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_text")
        for validate in self.text_validators:
            validate(data)
        return super().to_internal_value(data)


class UserField(StorableSlugField):
    def __init__(self, **kwargs):
        User = get_user_model()
        super().__init__(slug_field=User.USERNAME_FIELD, queryset=User._default_manager.all(), **kwargs)


class ClientField(StorableSlugField):
    def __init__(self, **kwargs):
        super().__init__(slug_field="client_id", queryset=get_application_model().objects.all(), **kwargs)


def _one_of(choices) -> dict[str, Any]:
    return {"invalid_choice": f"Choose one of: {', '.join(choices)}."}


class ConsentFilterSerializer(serializers.Serializer):
    """The staff list's query filters, validated before they reach a query.

    Blank means "no filter". CharField refuses NUL and surrogates (PostgreSQL cannot
    compare text holding a NUL); whitespace is kept, so a filter matches exactly.
    """

    user = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    application = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    kind = serializers.ChoiceField(
        choices=Consent.Kind.values,
        required=False,
        allow_blank=True,
        error_messages=_one_of(Consent.Kind.values),
    )
    state = serializers.ChoiceField(
        choices=Consent.Status.values,
        required=False,
        allow_blank=True,
        error_messages=_one_of(Consent.Status.values),
    )


class EnduringConsentRequestSerializer(serializers.Serializer):
    user = UserField(help_text="Username of the user.")
    application = ClientField(help_text="Client ID of the application.")
    reason = serializers.CharField(max_length=2000, help_text="The agreement this consent stands for.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value


class RevokeRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class RevokeEverythingRequestSerializer(RevokeRequestSerializer):
    user = UserField(required=False, help_text="Username: revoke all of this user's offline access.")
    application = ClientField(required=False, help_text="Client ID: revoke all offline access to it.")

    def validate(self, attrs):
        if not attrs.get("user") and not attrs.get("application"):
            raise serializers.ValidationError("Name a user, an application, or both.")
        return attrs


class RevocationResultSerializer(serializers.Serializer):
    consents = serializers.IntegerField()
    refresh_tokens = serializers.IntegerField()
    access_tokens = serializers.IntegerField()
