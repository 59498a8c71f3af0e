"""A background-sync job: with nobody present, refresh the stored token and sync the user's profile.

One iteration per run, for cron or a systemd timer, e.g. every 15 minutes::

    */15 * * * * cd /path/to/repo && .venv/bin/python -m example_project.clients.sync

It uses the token file that ``cli.py login`` wrote (same format; ``--token-file``)
and the DPoP key file next to it: refreshes the token without asking anyone,
with a proof signed by the key (the tokens are bound to it, RFC 9449), saves the
rotated refresh token, calls the OpenID Connect userinfo endpoint with the
access token as a DPoP token and prints one line saying what it synced.

When the server refuses the refresh (``invalid_grant``), the consent behind the
token was revoked (by the user on the connected apps page, or by an
administrator) or has expired: the job says so, deletes the token file and
exits with status 2, so a supervisor can stop scheduling it until the user
signs in again.

Exit status:

- 0: synced.
- 1: temporary failure (server unreachable or erroring); the token file is kept, try the next run.
- 2: no consent: access was revoked or expired (the token file was deleted), or nobody signed in
  yet (no token file), or the key file is missing. A person must sign in with ``cli.py login``;
  retrying will not help.
- 3: the token or key file was refused because other users can read it or it is not the user's.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import requests

if __package__:
    from . import _shared
else:  # run as a file: python example_project/clients/sync.py
    import _shared

EXIT_SYNCED = 0
EXIT_RETRY_LATER = 1
EXIT_CONSENT_GONE = 2
EXIT_UNSAFE_TOKEN_FILE = 3


def sync_once(base_url: str, client_id: str, token_path: Path) -> str:
    """Refresh, call userinfo, save the rotated token; return the line describing what was synced."""
    endpoints = _shared.Endpoints(base_url)
    with _shared.locked(token_path):
        token = _shared.load_token(token_path, base_url)
        key = _shared.key_for_token(token_path, token, base_url)
        token = _shared.refresh(endpoints, client_id, token_path, token, key)
    claims = _shared.userinfo(endpoints, client_id, token, key)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = ", ".join(sorted(claims))
    return f"{at} synced userinfo of subject {claims['sub']} from {endpoints.base_url} ({fields})"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Refresh the stored token and sync the user's profile once (for cron).",
        epilog="Exit status: 0 synced, 1 retry later, 2 consent revoked/expired or not signed in, "
        "3 token file refused.",
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
        help="The token file cli.py login wrote (default ~/.config/offline-access-demo/token.json); "
        "its DPoP key file is next to it.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    token_path = (args.token_file or _shared.default_token_path()).expanduser()
    try:
        print(sync_once(args.base_url, args.client_id, token_path))
    except _shared.SignInRequired as error:
        print(f"Sync stopped. {error.message}", file=sys.stderr)
        return EXIT_CONSENT_GONE
    except _shared.UnsafeTokenFile as error:
        print(f"Sync stopped. {error.message}", file=sys.stderr)
        return EXIT_UNSAFE_TOKEN_FILE
    except _shared.ClientError as error:
        print(f"Sync failed, will retry on the next run: {error.message}", file=sys.stderr)
        return EXIT_RETRY_LATER
    except requests.RequestException as error:
        print(
            f"Sync failed, will retry on the next run: {_shared.unreachable_message(args.base_url, error)}",
            file=sys.stderr,
        )
        return EXIT_RETRY_LATER
    return EXIT_SYNCED


if __name__ == "__main__":
    sys.exit(main())
