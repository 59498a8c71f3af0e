"""DPoP (RFC 9449) for the example clients: the device key and a fresh proof for each request.

The clients keep an EC P-256 key next to their token file. The server binds the
tokens it issues to that key's thumbprint, so a copied token file is useless
without the key: every token request (device poll, refresh) and every call with
the access token carries a proof, a small JWT signed with the key that names
the request it is for (``htm``, ``htu``), when it was made (``iat``) and a
never-repeated ``jti``; calls with the access token add its hash (``ath``) and
send it as ``Authorization: DPoP <token>``.

Everything cryptographic is jwcrypto's; the only hash here is ``ath``'s SHA-256,
which RFC 9449 4.2 defines. :class:`DPoPSession` plugs this into Authlib's
OAuth2Session through its two extension points (the client authentication of
token requests, and the token authentication of resource calls).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from authlib.integrations.requests_client import OAuth2Auth, OAuth2Session
from jwcrypto import jwk, jws

#: RFC 9449 4.2; ES256 is what every DPoP server supports.
ALGORITHM = "ES256"


def generate_key() -> jwk.JWK:
    """A new EC P-256 key pair, for one device (installation) of the client."""
    return jwk.JWK.generate(kty="EC", crv="P-256")


def thumbprint(key: jwk.JWK) -> str:
    """RFC 7638 SHA-256 thumbprint: what the server binds the tokens to (``dpop_jkt``)."""
    return key.thumbprint()


def htu(url: str) -> str:
    """RFC 9449 4.2: the request's URL without query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def access_token_hash(access_token: str) -> str:
    """RFC 9449 4.2 ``ath``: base64url of the SHA-256 of the access token."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def proof(
    key: jwk.JWK, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None
) -> str:
    """A DPoP proof for one HTTP request: new ``jti``, ``iat`` now, that request's method and URL."""
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(24),
        "htm": method.upper(),
        "htu": htu(url),
        "iat": int(time.time()),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": "dpop+jwt", "alg": ALGORITHM, "jwk": key.export_public(as_dict=True)}
    signed = jws.JWS(json.dumps(claims))
    signed.add_signature(key, alg=ALGORITHM, protected=json.dumps(header))
    return signed.serialize(compact=True)


class Prover:
    """One key, and the last server nonce seen (RFC 9449 8) for the proofs that follow."""

    def __init__(self, key: jwk.JWK) -> None:
        self.key = key
        self.nonce: str | None = None

    def proof(self, method: str, url: str, *, access_token: str | None = None) -> str:
        return proof(self.key, method, url, access_token=access_token, nonce=self.nonce)


class TokenRequestProof(requests.auth.AuthBase):
    """Authlib's client authentication, plus a proof made for this very token request.

    If the server asks for a nonce (400 ``use_dpop_nonce`` with a ``DPoP-Nonce``
    header), the request is sent once more with a new proof carrying it, as
    requests' own digest authentication resends after its challenge.
    """

    def __init__(self, prover: Prover, client_auth: requests.auth.AuthBase) -> None:
        self.prover = prover
        self.client_auth = client_auth

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request = self.client_auth(request)
        request.headers["DPoP"] = self.prover.proof(request.method or "POST", request.url or "")
        request.register_hook("response", self._remember_nonce)
        return request

    def _remember_nonce(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        nonce = response.headers.get("DPoP-Nonce")
        if not nonce:
            return response
        self.prover.nonce = nonce
        if response.status_code != 400 or _error_code(response) != "use_dpop_nonce":
            return response
        response.content  # noqa: B018 - read the body so the connection can be reused
        response.close()
        retry = response.request.copy()
        retry.headers["DPoP"] = self.prover.proof(retry.method or "POST", retry.url or "")
        # Sent by the adapter, not the session: this hook does not run again (no loop).
        second = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second


def _error_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


class DPoPTokenAuth(OAuth2Auth):
    """Resource calls with a DPoP-bound access token: ``Authorization: DPoP`` and a proof with ``ath``."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if str(self.token.get("token_type", "")).lower() != "dpop":
            return super().__call__(request)
        self.ensure_active_token()
        access_token = self.token["access_token"]
        request.headers["Authorization"] = f"DPoP {access_token}"
        request.headers["DPoP"] = self.client.prover.proof(
            request.method or "GET", request.url or "", access_token=access_token
        )
        return request


class DPoPSession(OAuth2Session):
    """Authlib's OAuth2Session with DPoP: proofs of ``key`` on token requests and resource calls."""

    token_auth_class = DPoPTokenAuth

    def __init__(self, *args: Any, key: jwk.JWK, **kwargs: Any) -> None:
        self.prover = Prover(key)  # before super().__init__, which makes the token auth
        super().__init__(*args, **kwargs)

    def client_auth(self, auth_method):
        return TokenRequestProof(self.prover, super().client_auth(auth_method))
