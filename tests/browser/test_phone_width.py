"""Issue 13: no page of the app or of the example site is wider than a phone.

Every page a person or an administrator can reach is opened in Chromium
emulating a 390 x 844 phone (``is_mobile``: the page's meta viewport decides its
layout width, as on a real phone, so a page without one is laid out 980 px wide
and fails). The page passes when ``document.documentElement.scrollWidth`` is at
most 390: nothing makes the whole page scroll sideways. A wide table may still
scroll inside its own container. The test fails naming every page that is too
wide, with its measured width.

The data is chosen to be wide: a long client name, client id and username, and
several consents and devices.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

import pytest
from django.test import Client
from oauth2_provider.models import get_application_model

from offline_access.models import ClientPolicy, Consent, OfflineTokenFamily
from tests import factories
from tests.oauth import authorize_url, exchange_code, get_code

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
LONG_NAME = "Calendar Synchronisation Service for the Whole Family and Everyone Else"
LONG_CLIENT_ID = "calendar-synchronisation-service-0123456789abcdefghijklmnopqrstuvwxyz"
LONG_USERNAME = "alexandra.montgomery-featherstonehaugh@example.com"
LONG_REDIRECT = "https://calendar-sync.client.example/oauth/callback/with/a/rather/long/path/0123456789"


class Widths:
    """Opens pages in a phone-sized browser and remembers every page that is too wide."""

    def __init__(self, context, base_url: str):
        self.page = context.new_page()
        self.base_url = base_url
        self.measured: dict[str, int] = {}

    def measure(self, name: str) -> int:
        self.page.wait_for_load_state()
        viewport_meta = self.page.locator('meta[name="viewport"]').count()
        assert viewport_meta >= 1, f"{name} ({self.page.url}) has no meta viewport tag"
        width = self.page.evaluate("document.documentElement.scrollWidth")
        self.measured[name] = width
        return width

    def visit(self, name: str, path: str, status: int | None = 200) -> int:
        response = self.page.goto(self.base_url + path)
        if status is not None:
            assert response.status == status, (name, path, response.status)
        return self.measure(name)

    def too_wide(self) -> dict[str, int]:
        return {name: width for name, width in self.measured.items() if width > PHONE["width"]}


def phone_context(chromium):
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    context.set_default_timeout(15_000)
    return context


def log_in(widths: Widths, username: str, next_url: str = "/") -> None:
    page = widths.page
    page.goto(f"{widths.base_url}/accounts/login/?{urlencode({'next': next_url})}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.locator("main form [type=submit]").click()
    page.wait_for_load_state()


def start_device_grant(client_id: str) -> dict:
    response = Client().post(
        "/o/device-authorization/",
        urlencode({"client_id": client_id, "scope": "openid offline_access"}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def wide_data(db):
    """A user with long names everywhere, consents, devices (token families), an enduring consent."""
    user = factories.UserFactory(username=LONG_USERNAME, first_name="Alexandra", last_name="Montgomery")
    admin = factories.UserFactory(username="admin", is_staff=True, is_superuser=True)
    web = factories.ApplicationFactory(name=LONG_NAME, client_id=LONG_CLIENT_ID, redirect_uris=LONG_REDIRECT)
    native = factories.PublicApplicationFactory(name="Phone App", client_id="phone-app")
    cli = factories.PublicApplicationFactory(
        name="Deploy command-line tool with a long name",
        client_id="deploy-command-line-tool-0123456789abcdef",
        authorization_grant_type=DEVICE_CODE_GRANT,
        redirect_uris="",
    )
    session = Client()
    session.force_login(user)
    for application in (web, web, native):  # two devices of the web client
        tokens = exchange_code(Client(), application, get_code(session, application, prompt="consent"))
        assert tokens.status_code == 200, tokens.content
    # The client's logo and pages (the consent screen and connected apps show them), with a
    # long home-page host: its link text names the host.
    ClientPolicy.objects.create(
        application=web,
        refresh_token_absolute_lifetime=timedelta(days=30),
        logo_uri="https://static.calendar-synchronisation-service.client.example/logo.png",
        client_uri="https://www.calendar-synchronisation-service-for-the-whole-family.client.example/",
        policy_uri="https://calendar-sync.client.example/privacy",
        tos_uri="https://calendar-sync.client.example/terms",
    )
    enduring = factories.EnduringConsentFactory(
        user=user,
        application=factories.ApplicationFactory(name="Payroll export", client_id="payroll-export-0123"),
        reason="Signed service contract number 2026-000123-ABCDEFGHIJKLMNOPQRSTUVWXYZ for the whole team",
    )
    return {"user": user, "admin": admin, "web": web, "native": native, "cli": cli, "enduring": enduring}


def test_every_page_fits_a_390_px_phone(live_server, chromium, wide_data, settings, artifacts):
    user, web, cli = wide_data["user"], wide_data["web"], wide_data["cli"]
    consent = Consent.objects.filter(user=user, application=web).first()
    family = OfflineTokenFamily.objects.filter(user=user, application=web).first()
    context = phone_context(chromium)
    admin_context = phone_context(chromium)
    try:
        widths = Widths(context, live_server.url)

        # The example site, signed out.
        widths.visit("example home (signed out)", "/")
        widths.visit("login", "/accounts/login/")
        widths.page.get_by_label("Username").fill("nobody")
        widths.page.get_by_label("Password").fill("wrong")
        widths.page.locator("main form [type=submit]").click()
        widths.measure("login with an error")

        # Signed in: the example home, the consent screen, its error pages.
        log_in(widths, LONG_USERNAME)
        widths.measure("example home (signed in)")
        widths.visit("consent screen", authorize_url(web, prompt="consent"))
        widths.page.screenshot(path=artifacts / "phone-consent-screen.png", full_page=True)
        widths.visit(
            "consent screen error: unknown client",
            authorize_url(web, client_id="no-such-client-" + "x" * 60),
            status=400,
        )
        widths.visit(
            "consent screen error: unregistered redirect_uri",
            authorize_url(web, redirect_uri="https://attacker.example/" + "a" * 80),
            status=400,
        )

        # Connected apps and their confirmation pages.
        widths.visit("connected apps", "/o/connected-apps/")
        widths.visit("connected apps: confirm revoking an app", f"/o/connected-apps/{consent.pk}/revoke/")
        widths.visit(
            "connected apps: confirm revoking a device", f"/o/connected-apps/device/{family.pk}/revoke/"
        )

        # The device flow: entry (empty, prefilled, wrong code), approval, done, denied, no longer pending.
        widths.visit("device: code entry", "/o/device/")
        allowed = start_device_grant(cli.client_id)
        complete = urlsplit(allowed["verification_uri_complete"])
        widths.visit("device: code entry prefilled", f"{complete.path}?{complete.query}")
        widths.page.screenshot(path=artifacts / "phone-device-code-entry.png", full_page=True)
        widths.page.get_by_label("Code").fill("WRONG-CODE-" + "X" * 40)
        widths.page.get_by_role("button", name="Continue").click()
        widths.measure("device: code entry with an error")
        widths.page.get_by_label("Code").fill(allowed["user_code"])
        widths.page.get_by_role("button", name="Continue").click()
        widths.measure("device: approval (consent screen)")
        confirm_path = urlsplit(widths.page.url).path
        widths.page.get_by_role("button", name="Allow").click()
        widths.measure("device: connected")
        widths.visit("device: approval no longer pending", confirm_path, status=404)
        denied = start_device_grant(cli.client_id)
        widths.visit("device: code entry (second)", "/o/device/")
        widths.page.get_by_label("Code").fill(denied["user_code"])
        widths.page.get_by_role("button", name="Continue").click()
        widths.page.get_by_role("button", name="Deny").click()
        widths.measure("device: denied")
        settings.OFFLINE_ACCESS = {**getattr(settings, "OFFLINE_ACCESS", {}), "DEVICE_CODE_ATTEMPTS": 1}
        widths.visit("device: code entry (third)", "/o/device/")
        widths.page.get_by_label("Code").fill("WRONG000")
        widths.page.get_by_role("button", name="Continue").click()
        widths.page.get_by_label("Code").fill("WRONG000")
        widths.page.get_by_role("button", name="Continue").click()
        assert widths.page.get_by_role("heading", level=1).inner_text() == "Too many attempts"
        widths.measure("device: too many attempts")

        # Signing out: the example's logged-out page.
        widths.visit("example home (before signing out)", "/")
        widths.page.locator("header form [type=submit]").click()
        widths.measure("logged out")

        # The admin, as a superuser.
        admin = Widths(admin_context, live_server.url)
        log_in(admin, "admin", "/admin/")
        admin.measure("admin index")
        enduring = wide_data["enduring"]
        policy = ClientPolicy.objects.get(application=web)
        application_model = get_application_model()
        app = "/admin/offline_access"
        admin_pages = {
            "admin: offline_access app index": f"{app}/",
            "admin: consents changelist": f"{app}/consent/",
            "admin: consent change form": f"{app}/consent/{consent.pk}/change/",
            "admin: consent history": f"{app}/consent/{consent.pk}/history/",
            "admin: enduring consents changelist": f"{app}/enduringconsent/",
            "admin: enduring consent add form": f"{app}/enduringconsent/add/",
            "admin: enduring consent change form": f"{app}/enduringconsent/{enduring.pk}/change/",
            "admin: token families changelist": f"{app}/offlinetokenfamily/",
            "admin: token family change form": f"{app}/offlinetokenfamily/{family.pk}/change/",
            "admin: client policies changelist": f"{app}/clientpolicy/",
            "admin: client policy add form": f"{app}/clientpolicy/add/",
            "admin: client policy change form": f"{app}/clientpolicy/{policy.pk}/change/",
            "admin: application change form (policy inline)": (
                f"/admin/{application_model._meta.app_label}/{application_model._meta.model_name}/{web.pk}/change/"
            ),
            "admin: user change form": f"/admin/auth/user/{user.pk}/change/",
            "admin: the user's offline access": f"{app}/consent/user/{user.pk}/",
        }
        for name, path in admin_pages.items():
            admin.visit(name, path)
        # Revoking everything of the user: the confirmation page.
        admin.page.screenshot(path=artifacts / "phone-admin-user-offline-access.png", full_page=True)
        admin.page.locator("#content form [type=submit]").click()
        assert re.search(r"[Rr]evoke", admin.page.inner_text("h1, h2"))
        admin.measure("admin: confirm revoking the user's offline access")
        admin.page.screenshot(path=artifacts / "phone-admin-confirm.png", full_page=True)

        measured = {**widths.measured, **admin.measured}
        too_wide = {**widths.too_wide(), **admin.too_wide()}
    finally:
        context.close()
        admin_context.close()

    assert len(measured) >= 35, sorted(measured)
    assert not too_wide, "Wider than a 390 px phone: " + ", ".join(
        f"{name}: {width} px" for name, width in sorted(too_wide.items())
    )
