"""The example clients (example_project/clients/) against the example site over real HTTP.

cli.py and sync.py run in-process against pytest-django's live server, with the
demo data from ``seed_demo``. The person at the browser is the Django test
client: while the CLI "sleeps" between polls, the test reads the user code the
CLI printed, enters and approves it, and moves the device's last poll back by
the time the CLI slept (so no test waits for real).

Both clients bind their tokens to a DPoP key (RFC 9449) kept next to the token
file; the server's side of DPoP is tested in test_dpop.py, these tests check
that the examples use it and what a copied token file is worth without the key.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
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
from jwcrypto import jwk
from oauth2_provider.models import get_application_model, get_device_grant_model, get_refresh_token_model

from example_project.clients import _dpop, _shared, cli, sync
from offline_access import dpop, services, token_storage
from offline_access.device import normalise_user_code
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from .oauth import stored_checksum, submit_consent

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
            # Stored as the hash of the code's canonical form (no dash, upper case).
            canonical = normalise_user_code(user_code)
            expired = DeviceGrant.objects.filter(user_code=token_storage.stored_value(canonical)).update(
                expires=timezone.now()
            )
            assert expired == 1  # else the CLI would poll a pending code for ever
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


def key_file(token_path: Path) -> Path:
    return _shared.key_path_for(token_path)


def stored_key(token_path: Path) -> jwk.JWK:
    return jwk.JWK.from_json(key_file(token_path).read_text())


def family_of(refresh_token: str) -> OfflineTokenFamily:
    row = get_refresh_token_model().objects.get(token_checksum=stored_checksum(refresh_token))
    return OfflineTokenFamily.objects.get(token_family=row.token_family)


def assert_bound_to_the_key_file(token_path: Path) -> None:
    """The stored tokens are DPoP tokens and the server bound their family to the key file's key."""
    token = stored(token_path)
    assert token["token_type"] == "DPoP"
    assert mode(key_file(token_path)) == 0o600
    key = stored_key(token_path)
    assert key.has_private
    assert family_of(token["refresh_token"]).dpop_jkt == key.thumbprint()


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


def refresh_over_http(site: str, refresh_token: str, key: jwk.JWK | None = None) -> requests.Response:
    """A refresh as anyone holding the refresh token could send it: with a proof of ``key``, or none."""
    headers = {} if key is None else {"DPoP": _dpop.proof(key, "POST", f"{site}/o/token/")}
    return requests.post(
        f"{site}/o/token/",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "demo-cli"},
        headers=headers,
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
    # Bound to the key generated at this first sign-in, kept next to the token file.
    assert sorted(p.name for p in token_path.parent.iterdir()) == ["token.dpop-key.json", "token.json"]
    assert_bound_to_the_key_file(token_path)
    key_before = key_file(token_path).read_bytes()
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
    # Refreshed with a proof of the same key (the server refuses anything else), which stays as it was.
    assert_bound_to_the_key_file(token_path)
    assert key_file(token_path).read_bytes() == key_before

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
    # Three polls, three proofs: the server remembers every jti, so a repeated one would have failed.
    assert_bound_to_the_key_file(token_path)


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
    assert (
        f"Signed out: the token was revoked and {signed_in} and its key deleted." in capsys.readouterr().out
    )
    assert not signed_in.exists()
    assert not key_file(signed_in).exists()

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
    assert_bound_to_the_key_file(signed_in)  # refreshed with a proof of the key file's key

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


# DPoP: the key file ------------------------------------------------------------------


def test_copied_token_file_without_the_key_cannot_refresh(signed_in, site, tmp_path, capsys):
    stolen = tmp_path / "elsewhere" / "token.json"
    stolen.parent.mkdir(mode=0o700)
    shutil.copy2(signed_in, stolen)  # the token file, as a backup or a synced home directory holds it
    token = stored(stolen)

    # The thief's own client: a refresh without a proof, or with a proof of its own key.
    for thiefs_key in (None, _dpop.generate_key()):
        response = refresh_over_http(site, token["refresh_token"], thiefs_key)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
    # The access token is refused as a bearer token, and with a proof of another key.
    userinfo = f"{site}/o/userinfo/"
    as_bearer = requests.get(
        userinfo, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10
    )
    assert as_bearer.status_code == 401
    other_proof = _dpop.proof(_dpop.generate_key(), "GET", userinfo, access_token=token["access_token"])
    with_other_key = requests.get(
        userinfo, headers={"Authorization": f"DPoP {token['access_token']}", "DPoP": other_proof}, timeout=10
    )
    assert with_other_key.status_code == 401

    # The example clients do not even try without the key file, and say why.
    assert cli.main(cli_args(site, stolen)) == 2
    assert f"The key file {key_file(stolen)} is missing." in capsys.readouterr().err
    assert sync.main(sync_args(site, stolen)) == sync.EXIT_CONSENT_GONE
    assert "is missing" in capsys.readouterr().err
    assert stolen.exists()
    assert not key_file(stolen).exists()

    # Told the token is an old bearer one, the CLI makes a key of its own: the server still refuses.
    stolen.write_text(json.dumps({**token, "token_type": "Bearer"}))
    assert cli.main(cli_args(site, stolen)) == 2
    assert f"Access to your account at {site} has ended" in capsys.readouterr().err

    # None of this signed the device out: with its key, its token file still works.
    assert cli.main(cli_args(site, signed_in)) == 0
    assert_bound_to_the_key_file(signed_in)


@pytest.mark.parametrize("unsafe_mode", [0o644, 0o640, 0o604], ids=["0644", "0640", "0604"])
def test_clients_refuse_a_key_file_others_can_read(signed_in, site, capsys, unsafe_mode):
    key_file(signed_in).chmod(unsafe_mode)
    before = signed_in.read_bytes()
    assert cli.main(cli_args(site, signed_in)) == 3
    err = capsys.readouterr().err
    assert f"Refusing to read {key_file(signed_in)}: its permissions ({unsafe_mode:04o})" in err
    assert "it holds the private key your tokens are bound to" in err
    assert f"chmod 600 {key_file(signed_in)}" in err
    assert sync.main(sync_args(site, signed_in)) == sync.EXIT_UNSAFE_TOKEN_FILE
    assert signed_in.read_bytes() == before  # refused before any refresh
    key_file(signed_in).chmod(0o600)
    assert cli.main(cli_args(site, signed_in)) == 0


def test_key_file_is_owner_only_from_its_creation_and_never_replaced(tmp_path, monkeypatch):
    token_path = tmp_path / "tokens" / "token.json"
    created = []
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            created.append((Path(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    umask = os.umask(0)  # so nothing but the mode the file is created with keeps others out
    try:
        key = _shared.key_for_sign_in(token_path, _shared.DEFAULT_BASE_URL)
    finally:
        os.umask(umask)

    # Created once, exclusively, with mode 0600: never readable by others, not even before a chmod.
    [(path, flags, created_mode)] = created
    assert path.parent == token_path.parent
    assert created_mode == 0o600
    assert flags & os.O_EXCL
    assert mode(key_file(token_path)) == 0o600
    assert [p.name for p in token_path.parent.iterdir()] == ["token.dpop-key.json"]  # no temporary left
    assert stored_key(token_path).thumbprint() == key.thumbprint()
    assert stored_key(token_path).has_private
    assert stored_key(token_path).get("crv") == "P-256"

    # A later sign-in on this device uses the same key; the key file is never overwritten.
    assert _shared.key_for_sign_in(token_path, _shared.DEFAULT_BASE_URL).thumbprint() == key.thumbprint()
    with pytest.raises(FileExistsError):
        _shared.create_key(token_path)
    assert stored_key(token_path).thumbprint() == key.thumbprint()


def test_a_damaged_key_file_asks_to_sign_in_again(signed_in, site, capsys):
    key_file(signed_in).write_text('{"kty": "EC"}')
    assert cli.main(cli_args(site, signed_in)) == 2
    assert f"The key file {key_file(signed_in)} is damaged." in capsys.readouterr().err


def test_a_token_file_from_before_dpop_is_bound_at_its_first_refresh(site, alice, token_path):
    # What the CLI stored before it used DPoP: a Bearer pair (here demo-native's, from the documented flow).
    tokens = native_exchange(site, native_code(alice)).json()
    assert tokens["token_type"] == "Bearer"
    assert family_of(tokens["refresh_token"]).dpop_jkt == ""
    _shared.save_token(token_path, tokens)

    assert cli.main([*cli_args(site, token_path), "--client-id", "demo-native"]) == 0
    assert_bound_to_the_key_file(token_path)  # RFC 9449 5: a public client's refresh with a proof binds
    assert refresh_over_http(site, stored(token_path)["refresh_token"]).json()["error"] == "invalid_grant"


def test_clients_follow_server_nonces_when_the_site_requires_them(site, alice, token_path, capsys, settings):
    # Every proof must carry a nonce the server gave out (RFC 9449 8); the first one cannot.
    settings.OFFLINE_ACCESS = {**getattr(settings, "OFFLINE_ACCESS", {}), "DPOP_NONCE_REQUIRED": True}
    assert cli.main(cli_args(site, token_path, "login"), sleep=PersonAtBrowser(capsys, alice)) == 0
    assert cli.main(cli_args(site, token_path)) == 0
    assert sync.main(sync_args(site, token_path)) == 0
    assert_bound_to_the_key_file(token_path)


def test_proofs_name_their_request_without_query_and_hash_the_access_token():
    key = _dpop.generate_key()
    value = _dpop.proof(key, "get", "http://testserver/o/userinfo/?x=1#f", access_token="an-access-token")
    checked = dpop.validate_proof(
        value, method="GET", url="http://testserver/o/userinfo/", access_token="an-access-token"
    )
    assert checked.jkt == key.thumbprint()
    with pytest.raises(dpop.DPoPError):  # another token, another ath
        dpop.validate_proof(
            _dpop.proof(key, "GET", "http://testserver/o/userinfo/", access_token="an-access-token"),
            method="GET",
            url="http://testserver/o/userinfo/",
            access_token="another-token",
        )
    assert _dpop.proof(key, "POST", "http://testserver/o/token/") != _dpop.proof(
        key, "POST", "http://testserver/o/token/"
    )  # a new jti every time


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


# The native-app flow (docs/howto/native-app.md) -----------------------------------------

#: RFC 7636 appendix B's example pair; a real app makes a new one for each sign-in.
NATIVE_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
#: The documented authorization URL for demo-native (registered as http://127.0.0.1/callback),
#: the app listening on port 53123.
NATIVE_AUTHORIZATION_URL = (
    "http://127.0.0.1:8000/o/authorize/?response_type=code&client_id=demo-native"
    "&redirect_uri=http%3A%2F%2F127.0.0.1%3A53123%2Fcallback&scope=openid%20offline_access"
    "&prompt=consent&state=af0ifjsldkj"
    "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
)


def native_code(user, extra: str = "") -> str:
    """The code the documented authorization URL (plus ``extra`` parameters) brings back once allowed."""
    browser = Client()
    browser.force_login(user)
    url = NATIVE_AUTHORIZATION_URL.removeprefix("http://127.0.0.1:8000") + extra
    location = urlparse(submit_consent(browser, url, browser.get(url))["Location"])
    return parse_qs(location.query)["code"][0]


def native_exchange(site: str, code: str, headers: dict | None = None) -> requests.Response:
    return requests.post(
        f"{site}/o/token/",
        data={
            "grant_type": "authorization_code",
            "client_id": "demo-native",
            "code": code,
            "redirect_uri": "http://127.0.0.1:53123/callback",
            "code_verifier": NATIVE_VERIFIER,
        },
        headers=headers or {},
        timeout=10,
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

    # The documented token exchange (the form a curl -d would send).
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


def test_native_app_readme_flow_with_dpop(site, alice):
    # The app's key; its thumbprint goes in the authorization URL (RFC 9449 10).
    key = _dpop.generate_key()
    code = native_code(alice, f"&dpop_jkt={key.thumbprint()}")
    token_url = f"{site}/o/token/"

    # The code is only exchanged with a proof of that key.
    other = native_exchange(site, code, {"DPoP": _dpop.proof(_dpop.generate_key(), "POST", token_url)})
    assert other.status_code == 400
    assert other.json()["error"] == "invalid_grant"
    response = native_exchange(site, code, {"DPoP": _dpop.proof(key, "POST", token_url)})
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "DPoP"
    assert family_of(tokens["refresh_token"]).dpop_jkt == key.thumbprint()

    # Resource calls: Authorization: DPoP plus a proof with ath.
    userinfo = f"{site}/o/userinfo/"
    claims = requests.get(
        userinfo,
        headers={
            "Authorization": f"DPoP {tokens['access_token']}",
            "DPoP": _dpop.proof(key, "GET", userinfo, access_token=tokens["access_token"]),
        },
        timeout=10,
    )
    assert claims.status_code == 200
    assert claims.json()["sub"] == str(alice.pk)

    # Refresh: a new proof of the same key each time.
    refreshed = requests.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "demo-native",
        },
        headers={"DPoP": _dpop.proof(key, "POST", token_url)},
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["token_type"] == "DPoP"
