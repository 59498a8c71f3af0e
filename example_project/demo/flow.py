"""The demo's native-client authorization request, shared by the home page and seed_demo.

Everything here is what a real native app would do on its side of the flow
(generate a PKCE pair, build the authorization URL, exchange the code); the
demo prints it so a person can play the app with a browser and curl.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from django.urls import reverse

NATIVE_CLIENT_ID = "demo-native"
# Registered without a port: DOT matches http://127.0.0.1 redirect URIs on any
# port (RFC 8252 section 7.3, oauth2_provider.models.redirect_to_uri_allowed),
# so a native app can listen on whatever port the OS gives it.
NATIVE_REDIRECT_URI = "http://127.0.0.1/callback"
NATIVE_EXAMPLE_REDIRECT_URI = "http://127.0.0.1:8765/callback"

# The command-line client (example_project/clients/cli.py): public, device grant
# (RFC 8628), no redirect URI.
CLI_CLIENT_ID = "demo-cli"

WEB_CLIENT_ID = "demo-web"
WEB_CLIENT_SECRET = "demo-web-secret"
WEB_REDIRECT_URI = "http://127.0.0.1:8001/callback"


def pkce_pair() -> tuple[str, str]:
    """Return a new PKCE ``(code_verifier, code_challenge)`` for method S256 (RFC 7636 section 4)."""
    verifier = secrets.token_urlsafe(48)  # 64 characters, within RFC 7636's 43..128
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


@dataclass(frozen=True)
class NativeAuthorizationExample:
    """A ready-to-use authorization request for ``demo-native`` and the curl calls that follow it."""

    base_url: str
    code_verifier: str
    code_challenge: str
    state: str
    authorization_url: str

    @property
    def token_url(self) -> str:
        return self.base_url + reverse("oauth2_provider:token")

    @property
    def exchange_command(self) -> str:
        return (
            f"curl -s -X POST {self.token_url} \\\n"
            f"  -d grant_type=authorization_code \\\n"
            f"  -d client_id={NATIVE_CLIENT_ID} \\\n"
            f"  -d redirect_uri={NATIVE_EXAMPLE_REDIRECT_URI} \\\n"
            f"  -d code_verifier={self.code_verifier} \\\n"
            f"  -d code=PASTE_THE_CODE_HERE"
        )

    @property
    def refresh_command(self) -> str:
        return (
            f"curl -s -X POST {self.token_url} \\\n"
            f"  -d grant_type=refresh_token \\\n"
            f"  -d client_id={NATIVE_CLIENT_ID} \\\n"
            f"  -d refresh_token=PASTE_THE_REFRESH_TOKEN_HERE"
        )


def native_authorization_example(base_url: str) -> NativeAuthorizationExample:
    """Build an OIDC authorization request asking for offline access, with ``prompt=consent``.

    ``base_url`` is the provider's origin, e.g. ``http://127.0.0.1:8000``.
    """
    base_url = base_url.rstrip("/")
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": NATIVE_CLIENT_ID,
            "redirect_uri": NATIVE_EXAMPLE_REDIRECT_URI,
            "scope": "openid offline_access",
            "prompt": "consent",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        quote_via=quote,
    )
    return NativeAuthorizationExample(
        base_url=base_url,
        code_verifier=verifier,
        code_challenge=challenge,
        state=state,
        authorization_url=f"{base_url}{reverse('oauth2_provider:authorize')}?{query}",
    )
