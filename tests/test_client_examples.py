"""The example clients (example_project/clients/) against the example site over real HTTP.

cli.py and sync.py run in-process against pytest-django's live server, with the
demo data from ``seed_demo``. The person at the browser is the Django test
client: while the CLI "sleeps" between polls, the test reads the user code the
CLI printed, enters and approves it, and moves the device's last poll back by
the time the CLI slept (so no test waits for real).
"""

from __future__ import annotations

import io
import json
import re
import stat
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_application_model, get_device_grant_model

from example_project.clients import _shared, cli, sync
from offline_access import services, token_storage
from offline_access.models import Consent, ConsentEvent

from .oauth import submit_consent

pytestmark = pytest.mark.django_db(transaction=True)

DeviceGrant = get_device_grant_model()
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def alice(transactional_db):
    """The demo site's data, as ``manage.py seed_demo`` creates it; returns the demo user."""
    call_command("seed_demo", stdout=io.StringIO())
    return get_user_model().objects.get(username="alice")


@pytest.fixture
def site(live_server, alice) -> str:
    return live_server.url


@pytest.fixture
def token_path(tmp_path) -> Path:
    # A directory that does not exist yet: the CLI creates it.
    return tmp_path / "config" / "offline-access-demo" / "token.json"


class PersonAtBrowser:
    """The injectable ``sleep`` of cli.login: acts in the browser and lets time pass.

    On sleep number ``act_on`` the person reads the user code from the CLI's
    output and allows or denies it (or lets it expire). Every sleep moves the
    device's last poll back by the seconds slept, except those listed in
    ``too_early`` (the CLI then polls sooner than the server allows).
    """

    def __init__(self, capsys, user, *, decision="allow", act_on=1, too_early=()):
        self.capsys, self.user, self.decision = capsys, user, decision
        self.act_on, self.too_early = act_on, set(too_early)
        self.sleeps: list[float] = []
        self.printed = ""

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.printed += self.capsys.readouterr().out
        if len(self.sleeps) == self.act_on:
            self.act()
        if len(self.sleeps) not in self.too_early:
            DeviceGrant.objects.update(last_checked=timezone.now() - timedelta(seconds=seconds))

    def act(self) -> None:
        user_code = re.search(r"enter the code: (\S+)", self.printed).group(1)
        if self.decision == "expire":
            DeviceGrant.objects.filter(user_code=token_storage.stored_value(user_code)).update(
                expires=timezone.now()
            )
            return
        browser = Client()
        browser.force_login(self.user)
        entered = browser.post("/o/device/", {"user_code": user_code})
        assert entered.status_code == 302, entered.content
        screen = browser.get(entered["Location"])
        assert screen.context["offline_access"] is True
        decided = browser.post(entered["Location"], {"decision": self.decision})
        assert decided.status_code == 302


def stored(token_path: Path) -> dict:
    return json.loads(token_path.read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def signed_in(site, alice, token_path, capsys) -> Path:
    """``cli.py login`` has run and the user allowed it; returns the token file."""
    assert cli.main(cli_args(site, token_path, "login"), sleep=PersonAtBrowser(capsys, alice)) == 0
    capsys.readouterr()
    return token_path


def cli_args(site: str, token_path: Path, *command: str) -> list[str]:
    return [*command, "--base-url", site, "--token-file", str(token_path)]


def sync_args(site: str, token_path: Path) -> list[str]:
    return ["--base-url", site, "--token-file", str(token_path)]


def refresh_over_http(site: str, refresh_token: str) -> requests.Response:
    return requests.post(
        f"{site}/o/token/",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "demo-cli"},
        timeout=10,
    )


def revoke_alices_consent(alice) -> None:
    result = services.revoke_consents(Consent.objects.filter(user=alice), via=ConsentEvent.Via.USER)
    assert result.consents == 1


# seed_demo ---------------------------------------------------------------------------


def test_seed_demo_registers_demo_cli_as_public_device_client_and_stays_idempotent(transactional_db):
    Application = get_application_model()
    first = io.StringIO()
    call_command("seed_demo", stdout=first)
    Application.objects.filter(client_id="demo-cli").update(
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE, name="changed"
    )
    call_command("seed_demo", stdout=io.StringIO())

    demo_cli = Application.objects.get(client_id="demo-cli")
    assert demo_cli.name == "Demo CLI"
    assert demo_cli.client_type == Application.CLIENT_PUBLIC
    assert demo_cli.authorization_grant_type == Application.GRANT_DEVICE_CODE
    assert demo_cli.redirect_uris == ""
    # The other clients keep the authorization code grant.
    assert set(
        Application.objects.filter(client_id__in=["demo-web", "demo-native"]).values_list(
            "authorization_grant_type", flat=True
        )
    ) == {Application.GRANT_AUTHORIZATION_CODE}
    assert Application.objects.count() == 3
    assert ".venv/bin/python -m example_project.clients.cli login" in first.getvalue()


# cli.py ------------------------------------------------------------------------------


def test_cli_device_login_then_whoami_refreshes_without_asking_again(site, alice, token_path, capsys):
    person = PersonAtBrowser(capsys, alice)
    assert cli.main(cli_args(site, token_path, "login"), sleep=person) == 0
    out = person.printed + capsys.readouterr().out
    assert "http://127.0.0.1:8000/o/device/" in out  # the example site's verification URI
    assert f"Signed in as subject {alice.pk}." in out
    assert person.sleeps == [5]  # the server's interval, before the first poll

    # Stored only for its owner.
    assert mode(token_path) == 0o600
    assert mode(token_path.parent) == 0o700
    first = stored(token_path)
    assert "offline_access" in first["scope"].split()
    assert first["refresh_token"]
    assert not list(token_path.parent.glob("*.tmp"))
    consent = Consent.objects.get(user=alice, application__client_id="demo-cli")
    assert consent.events.get().via == ConsentEvent.Via.CONSENT_SCREEN

    # A later run: no device code, no approval; the refresh token rotates and is saved.
    assert cli.main(cli_args(site, token_path)) == 0
    assert capsys.readouterr().out == f"Acting for subject {alice.pk} at {site}.\n"
    assert DeviceGrant.objects.count() == 1
    second = stored(token_path)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert mode(token_path) == 0o600

    # And again, with the rotated token.
    assert cli.main(cli_args(site, token_path, "whoami")) == 0
    assert stored(token_path)["refresh_token"] != second["refresh_token"]


def test_cli_polling_respects_interval_and_slow_down(site, alice, token_path, capsys):
    # First sleep: no time passes, so the poll comes too early -> slow_down, and
    # the CLI waits 5 s longer from then on (RFC 8628 section 3.5); the second
    # poll is pending; the person allows during the third sleep.
    person = PersonAtBrowser(capsys, alice, act_on=3, too_early={1})
    assert cli.main(cli_args(site, token_path, "login"), sleep=person) == 0
    assert person.sleeps == [5, 10, 10]
    assert stored(token_path)["refresh_token"]


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ("deny", "Sign-in cancelled: the request was denied in the browser."),
        ("expire", "Sign-in timed out: the code expired before it was approved."),
    ],
)
def test_cli_login_stops_on_access_denied_and_expired_token(
    site, alice, token_path, capsys, decision, message
):
    person = PersonAtBrowser(capsys, alice, decision=decision)
    assert cli.main(cli_args(site, token_path, "login"), sleep=person) == 1
    assert message in capsys.readouterr().err
    assert person.sleeps == [5]
    assert not token_path.exists()
    assert not Consent.objects.exists()


@pytest.mark.parametrize("unsafe_mode", [0o644, 0o640, 0o606], ids=["0644", "0640", "0606"])
def test_cli_refuses_a_token_file_others_can_read(signed_in, site, capsys, unsafe_mode):
    signed_in.chmod(unsafe_mode)
    assert cli.main(cli_args(site, signed_in)) == 3
    err = capsys.readouterr().err
    assert f"Refusing to read {signed_in}: its permissions ({unsafe_mode:04o})" in err
    assert f"chmod 600 {signed_in}" in err
    # Refused before any use: the file is kept and its refresh token still works.
    assert signed_in.exists()
    signed_in.chmod(0o600)
    assert cli.main(cli_args(site, signed_in)) == 0


def test_cli_refuses_a_symlinked_token_file(signed_in, site, capsys, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(signed_in)
    assert cli.main(cli_args(site, link)) == 3
    assert "it is a symbolic link" in capsys.readouterr().err


def test_cli_without_token_file_says_how_to_sign_in(site, token_path, capsys):
    assert cli.main(cli_args(site, token_path)) == 2
    err = capsys.readouterr().err
    assert f"Not signed in: there is no token file at {token_path}." in err
    assert f"python -m example_project.clients.cli --base-url {site} --token-file {token_path} login" in err


def test_cli_after_revoked_consent_explains_and_deletes_the_token_file(signed_in, site, alice, capsys):
    revoke_alices_consent(alice)
    assert cli.main(cli_args(site, signed_in)) == 2
    err = capsys.readouterr().err
    assert f"Access to your account at {site} has ended: it was revoked" in err
    assert f"connected apps page, {site}/o/connected-apps/" in err
    assert f"The stale token file {signed_in} was deleted." in err
    assert f"--token-file {signed_in} login" in err
    assert not signed_in.exists()

    # The next run does not pretend otherwise.
    assert cli.main(cli_args(site, signed_in)) == 2
    assert "Not signed in" in capsys.readouterr().err


def test_cli_logout_revokes_the_refresh_token(signed_in, site, capsys):
    refresh_token = stored(signed_in)["refresh_token"]
    assert cli.main(cli_args(site, signed_in, "logout")) == 0
    assert f"Signed out: the token was revoked and {signed_in} deleted." in capsys.readouterr().out
    assert not signed_in.exists()

    response = refresh_over_http(site, refresh_token)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


# sync.py -----------------------------------------------------------------------------


def test_sync_exits_0_while_consent_holds_and_2_after_revocation(signed_in, site, alice, capsys):
    before = stored(signed_in)["refresh_token"]
    assert sync.main(sync_args(site, signed_in)) == sync.EXIT_SYNCED == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ synced userinfo of subject {alice.pk} from {site} \(.*sub.*\)\n",
        out,
    )
    assert stored(signed_in)["refresh_token"] != before  # the rotated token was saved
    assert mode(signed_in) == 0o600

    revoke_alices_consent(alice)
    assert sync.main(sync_args(site, signed_in)) == sync.EXIT_CONSENT_GONE == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"Sync stopped. Access to your account at {site} has ended: it was revoked"
    )
    assert not signed_in.exists()
    # Later runs keep saying a person must sign in.
    assert sync.main(sync_args(site, signed_in)) == 2


def test_sync_keeps_the_token_when_the_server_is_unreachable(signed_in, capsys):
    before = signed_in.read_bytes()
    assert sync.main(sync_args("http://127.0.0.1:9", signed_in)) == sync.EXIT_RETRY_LATER == 1
    assert (
        "will retry on the next run: Cannot talk to the server at http://127.0.0.1:9"
        in capsys.readouterr().err
    )
    assert signed_in.read_bytes() == before


def test_sync_refuses_a_token_file_others_can_read(signed_in, site, capsys):
    signed_in.chmod(0o644)
    assert sync.main(sync_args(site, signed_in)) == sync.EXIT_UNSAFE_TOKEN_FILE == 3
    assert "Refusing to read" in capsys.readouterr().err


# The token file ----------------------------------------------------------------------


def test_token_file_is_replaced_atomically_with_owner_only_permissions(tmp_path):
    path = tmp_path / "tokens" / "token.json"
    _shared.save_token(path, {"access_token": "a", "refresh_token": "r1"})
    path.chmod(0o644)  # an older, careless file: the new one does not inherit its mode
    _shared.save_token(path, {"access_token": "b", "refresh_token": "r2"})
    assert stored(path)["refresh_token"] == "r2"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["token.json"]


# The native-app flow (README) ----------------------------------------------------------

#: RFC 7636 appendix B's example pair; a real app makes a new one for each sign-in.
NATIVE_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
#: The README's authorization URL for demo-native (registered as http://127.0.0.1/callback),
#: the app listening on port 53123.
NATIVE_AUTHORIZATION_URL = (
    "http://127.0.0.1:8000/o/authorize/?response_type=code&client_id=demo-native"
    "&redirect_uri=http%3A%2F%2F127.0.0.1%3A53123%2Fcallback&scope=openid%20offline_access"
    "&prompt=consent&state=af0ifjsldkj"
    "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
)


def test_native_app_readme_url_gets_a_code_on_any_loopback_port_and_offline_tokens(site, alice):
    browser = Client()
    browser.force_login(alice)
    url = NATIVE_AUTHORIZATION_URL.removeprefix("http://127.0.0.1:8000")
    screen = browser.get(url)
    assert screen.status_code == 200
    assert screen.context["offline_access"] is True
    location = urlparse(submit_consent(browser, url, screen)["Location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "127.0.0.1:53123", "/callback")
    params = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert params["state"] == "af0ifjsldkj"

    # The README's token exchange (the form a curl -d would send).
    response = requests.post(
        f"{site}/o/token/",
        data={
            "grant_type": "authorization_code",
            "client_id": "demo-native",
            "code": params["code"],
            "redirect_uri": "http://127.0.0.1:53123/callback",
            "code_verifier": NATIVE_VERIFIER,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert set(tokens["scope"].split()) == {"openid", "offline_access"}
    assert tokens["refresh_token"] and tokens["id_token"]


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1:53123/other", "http://localhost:53123/callback", "http://127.0.0.2:53123/callback"],
)
def test_native_app_loopback_redirect_must_match_except_for_the_port(alice, redirect_uri):
    browser = Client()
    browser.force_login(alice)
    url = NATIVE_AUTHORIZATION_URL.removeprefix("http://127.0.0.1:8000").replace(
        "http%3A%2F%2F127.0.0.1%3A53123%2Fcallback", requests.utils.quote(redirect_uri, safe="")
    )
    response = browser.get(url)
    assert response.status_code == 400  # an error page, never a redirect to an unregistered URI
    assert "Location" not in response


def test_native_app_code_needs_the_pkce_verifier(site, alice):
    browser = Client()
    browser.force_login(alice)
    url = NATIVE_AUTHORIZATION_URL.removeprefix("http://127.0.0.1:8000")
    location = urlparse(submit_consent(browser, url, browser.get(url))["Location"])
    code = parse_qs(location.query)["code"][0]
    response = requests.post(
        f"{site}/o/token/",
        data={
            "grant_type": "authorization_code",
            "client_id": "demo-native",
            "code": code,
            "redirect_uri": "http://127.0.0.1:53123/callback",
            "code_verifier": "x" * 43,
        },
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
