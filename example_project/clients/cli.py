"""A command-line client of the demo site: device sign-in (RFC 8628) and offline access.

Run it from the repository root while the demo runs (``python manage.py demo``)::

    python -m example_project.clients.cli login    # shows a code to approve in a browser
    python -m example_project.clients.cli          # later: who am I acting for? (whoami)
    python -m example_project.clients.cli logout   # revoke the refresh token, delete the file

``login`` asks the server for a device code (scopes ``openid offline_access``),
prints where to enter the user code, and polls the token endpoint at the
interval the server asks for (5 s longer after each ``slow_down``) until the user
allows or denies, or the code expires. The tokens go to a file only its owner
can read (default ``~/.config/offline-access-demo/token.json``).

The tokens are bound to this device with DPoP (RFC 9449): the first sign-in
generates an EC P-256 key, kept next to the token file (``token.dpop-key.json``,
also 0600), and every token request and userinfo call carries a fresh proof
signed with it. A copy of the token file without the key cannot refresh.

``whoami`` (the default) refreshes the stored token, without asking the user
again, saves the rotated refresh token, and prints whom the userinfo endpoint
says the client acts for. If the server refuses the refresh (``invalid_grant``:
the user revoked the access on the connected apps page, an administrator did,
or it expired), it says so, deletes the stale file and tells how to sign in again.

Token requests go through Authlib's OAuth2Session (client ``demo-cli``, public:
no secret), as a third-party client would make them; ``_dpop.py`` adds the proofs.

Exit status: 0 done; 1 failed (server unreachable or refusing, code denied or
expired); 2 sign-in needed (not signed in, or access revoked or expired);
3 token file refused (others can read it, or it is not the user's).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError

if __package__:
    from . import _shared
else:  # run as a file: python example_project/clients/cli.py
    import _shared

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPES = "openid offline_access"
#: RFC 8628 section 3.5: after ``slow_down`` the client waits this much longer between polls.
SLOW_DOWN_SECONDS = 5


def login(
    base_url: str,
    client_id: str,
    token_path: Path,
    *,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Sign in with the device authorization grant and save the tokens; return the userinfo claims."""
    endpoints = _shared.Endpoints(base_url)
    key = _shared.key_for_sign_in(token_path, base_url)
    with _shared.session(client_id, key=key) as client:
        device = start_device_authorization(client, endpoints, client_id)
        print("To sign in, open this page in a browser:")
        print(f"    {device['verification_uri']}")
        print(f"and enter the code: {device['user_code']}")
        if device.get("verification_uri_complete"):
            print(f"(or open {device['verification_uri_complete']})")
        print("Waiting for you to approve...", flush=True)
        token = poll_for_token(client, endpoints, device, sleep=sleep, clock=clock)
    with _shared.locked(token_path):
        _shared.save_token(token_path, token)
    claims = _shared.userinfo(endpoints, client_id, token, key)
    print(f"Signed in as {who(claims)}. Token saved to {token_path}.")
    if "refresh_token" not in token:
        print(
            "The server did not grant offline access (no refresh token): you will have to sign in again "
            "when the access token expires."
        )
    return claims


def start_device_authorization(client, endpoints: _shared.Endpoints, client_id: str) -> dict[str, Any]:
    """RFC 8628 section 3.1: ask for a device code and a user code."""
    response = client.post(
        endpoints.device_authorization,
        data={"client_id": client_id, "scope": SCOPES},
        withhold_token=True,  # no token yet: a plain form POST
    )
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or "device_code" not in body:
        error = body.get("error", f"HTTP {response.status_code}")
        hint = ""
        if error in ("invalid_client", "unauthorized_client"):
            hint = (
                f" Is the client {client_id!r} registered for the device grant? "
                "Run: python manage.py seed_demo"
            )
        raise _shared.ClientError(f"The server refused to start the sign-in: {error}.{hint}")
    return body


def poll_for_token(
    client,
    endpoints: _shared.Endpoints,
    device: dict[str, Any],
    *,
    sleep: Callable[[float], Any],
    clock: Callable[[], float],
) -> dict[str, Any]:
    """RFC 8628 section 3.4-3.5: poll the token endpoint until the user decides or the code expires."""
    interval = int(device.get("interval") or 5)
    deadline = clock() + int(device.get("expires_in") or 600)
    while True:
        sleep(interval)
        if clock() >= deadline:
            raise _shared.ClientError(expired_message())
        try:
            token = client.fetch_token(
                endpoints.token, grant_type=DEVICE_CODE_GRANT, device_code=device["device_code"]
            )
        except OAuthError as error:
            if error.error == "authorization_pending":
                continue
            if error.error == "slow_down":
                interval += SLOW_DOWN_SECONDS
                continue
            if error.error == "access_denied":
                raise _shared.ClientError(
                    "Sign-in cancelled: the request was denied in the browser."
                ) from None
            if error.error == "expired_token":
                raise _shared.ClientError(expired_message()) from None
            raise _shared.ClientError(f"Sign-in failed: {_shared.describe(error)}.") from None
        return dict(token)


def expired_message() -> str:
    return "Sign-in timed out: the code expired before it was approved. Run login again for a new code."


def whoami(base_url: str, client_id: str, token_path: Path) -> dict[str, Any]:
    """Refresh the stored token (no user interaction), then print whom the client acts for."""
    endpoints = _shared.Endpoints(base_url)
    with _shared.locked(token_path):
        token = _shared.load_token(token_path, base_url)
        key = _shared.key_for_token(token_path, token, base_url)
        token = _shared.refresh(endpoints, client_id, token_path, token, key)
    claims = _shared.userinfo(endpoints, client_id, token, key)
    print(f"Acting for {who(claims)} at {endpoints.base_url}.")
    return claims


def logout(base_url: str, client_id: str, token_path: Path) -> None:
    """Revoke the refresh token (RFC 7009; its access token goes with it), delete the token and key files.

    Revocation needs no proof (RFC 9449 defines none for it): the refresh token
    alone identifies what to end, and ending it is what its holder wants.
    """
    endpoints = _shared.Endpoints(base_url)
    with _shared.locked(token_path):
        token = _shared.load_token(token_path, base_url)
        value = token.get("refresh_token") or token["access_token"]
        hint = "refresh_token" if token.get("refresh_token") else "access_token"
        with _shared.session(client_id) as client:
            response = client.revoke_token(endpoints.revocation, value, token_type_hint=hint)
        if response.status_code != 200:
            raise _shared.ClientError(
                f"The server did not revoke the token (HTTP {response.status_code}); the token file was kept."
            )
        _shared.delete_token(token_path)
        _shared.delete_key(token_path)
    print(f"Signed out: the token was revoked and {token_path} and its key deleted.")


def who(claims: dict[str, Any]) -> str:
    name = claims.get("preferred_username") or claims.get("email") or claims.get("name")
    return f"{name} (subject {claims['sub']})" if name else f"subject {claims['sub']}"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Demo command-line client: device sign-in with offline access.",
        epilog="Exit status: 0 done, 1 failed, 2 sign-in needed, 3 token file refused.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="whoami",
        choices=["login", "whoami", "logout"],
        help="login: sign in with a code; whoami (default): show whom the stored token acts for; "
        "logout: revoke the token and delete the token and key files.",
    )
    parser.add_argument(
        "--base-url", default=_shared.DEFAULT_BASE_URL, help="The demo site (default %(default)s)."
    )
    parser.add_argument(
        "--client-id", default=_shared.DEFAULT_CLIENT_ID, help="OAuth client (default %(default)s)."
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="Where the tokens are kept (default ~/.config/offline-access-demo/token.json).",
    )
    return parser


def main(argv: list[str] | None = None, *, sleep: Callable[[float], Any] = time.sleep) -> int:
    args = parser().parse_args(argv)
    token_path = (args.token_file or _shared.default_token_path()).expanduser()
    try:
        if args.command == "login":
            login(args.base_url, args.client_id, token_path, sleep=sleep)
        elif args.command == "logout":
            logout(args.base_url, args.client_id, token_path)
        else:
            whoami(args.base_url, args.client_id, token_path)
    except _shared.ClientError as error:
        print(error.message, file=sys.stderr)
        return error.exit_code
    except requests.RequestException as error:
        print(_shared.unreachable_message(args.base_url, error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
