"""DPoP (RFC 9449) on the client side, for tests: keys and proofs made with jwcrypto."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from urllib.parse import urlencode

import pytest
from django.test import Client
from jwcrypto import jwk, jws

from .oauth import VERIFIER, client_auth

TOKEN_URL = "http://testserver/o/token/"
USERINFO_URL = "http://testserver/o/userinfo/"


def new_key(kty: str = "EC", **params) -> jwk.JWK:
    """A fresh key pair: P-256 by default, or e.g. ``new_key("OKP", crv="Ed25519")``."""
    if kty == "EC":
        params.setdefault("crv", "P-256")
    return jwk.JWK.generate(kty=kty, **params)


def jkt(key: jwk.JWK) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url."""
    return key.thumbprint()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(access_token: str) -> str:
    return b64(hashlib.sha256(access_token.encode()).digest())


def proof(
    key: jwk.JWK,
    *,
    htm: str = "POST",
    htu: str = TOKEN_URL,
    iat: float | None = None,
    jti: str | None = None,
    alg: str | None = None,
    header: dict | None = None,
    claims: dict | None = None,
    omit: tuple[str, ...] = (),
    sign_with: jwk.JWK | None = None,
) -> str:
    """A DPoP proof signed by ``key`` (or ``sign_with``), its public key in the header.

    ``header`` and ``claims`` override or add members; ``omit`` drops claims or
    header members by name.
    """
    if alg is None:
        alg = {"EC": "ES256", "OKP": "EdDSA", "RSA": "PS256"}[key.get("kty")]
    header = header or {}
    public = header["jwk"] if "jwk" in header else key.export_public(as_dict=True)
    protected = {"typ": "dpop+jwt", "alg": alg, **header, "jwk": public}
    payload = {
        "jti": str(uuid.uuid4()) if jti is None else jti,
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()) if iat is None else iat,
        **(claims or {}),
    }
    for name in omit:
        protected.pop(name, None)
        payload.pop(name, None)
    token = jws.JWS(json.dumps(payload))
    token.allowed_algs = [alg]
    token.add_signature(sign_with or key, alg=alg, protected=json.dumps(protected))
    return token.serialize(compact=True)


def unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    """A compact JWS put together by hand (``alg: none``, forged signatures)."""
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


def post_token(api: Client, data: dict, dpop: str | None = None, **headers):
    if dpop is not None:
        headers["HTTP_DPOP"] = dpop
    return api.post("/o/token/", urlencode(data), content_type="application/x-www-form-urlencoded", **headers)


def exchange(api: Client, application, code: str, dpop: str | None = None, **headers):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": application.redirect_uris.split()[0],
        "code_verifier": VERIFIER,
        **client_auth(application),
    }
    return post_token(api, data, dpop, **headers)


def refresh(api: Client, application, refresh_token: str, dpop: str | None = None, **extra):
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        **client_auth(application),
        **extra,
    }
    return post_token(api, data, dpop)


def userinfo(api: Client, access_token: str, *, scheme: str = "DPoP", dpop: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {access_token}"}
    if dpop is not None:
        headers["HTTP_DPOP"] = dpop
    return api.get("/o/userinfo/", **headers)


def resource_proof(
    key: jwk.JWK, access_token: str, *, htm: str = "GET", htu: str = USERINFO_URL, **kwargs
) -> str:
    claims = {"ath": ath(access_token), **kwargs.pop("claims", {})}
    return proof(key, htm=htm, htu=htu, claims=claims, **kwargs)


#: The Redis server the replay tests share a cache through (.ci/run starts it).
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> None:
    """Skip without Redis, except on CI (``CI`` set), where .ci/run starts it: there it fails."""
    try:
        import redis

        if redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping():
            return
        reason = f"Redis on {REDIS_URL} did not answer PING"
    except ImportError:
        reason = "the redis package is not installed (it is in the test extra)"
    except Exception as error:  # any connection failure means "no Redis here"
        reason = f"no Redis on {REDIS_URL}: {error}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run starts Redis before tox")
    pytest.skip(reason)
