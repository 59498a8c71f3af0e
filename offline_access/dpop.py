"""DPoP proofs (RFC 9449): checking them, and the replay store.

A DPoP proof is a JWT the client signs with its own key for one HTTP request
(RFC 9449 4). The token endpoint binds what it issues to that key's RFC 7638
thumbprint (``jkt``) and from then on asks every request using those tokens to
prove possession of the private key again. This module is the pure checking
(section 4.3) plus the two pieces of shared state it needs, both kept so that
they work across web workers and machines:

- the replay store (4.3 step 12 / 11.1): a proof's ``jti`` is remembered in
  Django's cache (``OFFLINE_ACCESS["DPOP_REPLAY_CACHE"]``) with ``cache.add()``,
  which is atomic on Redis, Memcached and the database cache, for as long as the
  proof could be accepted. A per-process cache (LocMem) only catches replays to
  the same worker: system check ``offline_access.W004`` warns.
- server nonces (section 8), when ``OFFLINE_ACCESS["DPOP_NONCE_REQUIRED"]`` is on:
  stateless, a random value signed with a timestamp by Django's ``TimestampSigner``
  (keyed with ``SECRET_KEY``), so any worker accepts a nonce another one issued
  for ``DPOP_NONCE_MAX_AGE``.

Everything cryptographic is jwcrypto's (JWS verification, RFC 7638 thumbprints);
the only hashing here is the SHA-256 of ``ath`` (RFC 9449 4.2) and of cache keys.

``htu`` is compared with ``request.build_absolute_uri(request.path)``: the scheme
and host Django believes it is serving. Behind a TLS-terminating proxy that means
``SECURE_PROXY_SSL_HEADER`` (scheme) and ``USE_X_FORWARDED_HOST`` (host) must be
set the way Django's documentation describes, or every proof is refused as made
for another URL (which fails closed, never open).

The token endpoint (:class:`offline_access.device.OfflineAccessTokenView`) and the
resource endpoints check the proof in the Django request and leave the verdict in
``request.META[META_KEY]``, which DOT copies into the headers of oauthlib's request,
so the validator reads it without touching HTTP. A key that no HTTP header can
produce (WSGI puts client headers under ``HTTP_*``), so a client cannot forge it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core import signing
from django.core.cache import caches
from django.http import HttpRequest, JsonResponse
from jwcrypto import jwk, jws

from .conf import settings

#: Where a checked proof (a :class:`Proof`, or None for a request without one) travels
#: from the view to the validator: ``request.META`` -> oauthlib's ``request.headers``.
META_KEY = "offline_access.dpop"

#: RFC 9449 4.2: the JOSE ``typ`` of a proof.
PROOF_TYPE = "dpop+jwt"

#: Asymmetric JWS algorithms accepted when the site does not choose
#: (``OFFLINE_ACCESS["DPOP_SIGNING_ALGS"]``); jwcrypto verifies each. Never ``none``
#: nor an HMAC algorithm (RFC 9449 4.3 step 5): :func:`signing_algs` drops those.
DEFAULT_SIGNING_ALGS = ("ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256")
_ASYMMETRIC_ALGS = frozenset(DEFAULT_SIGNING_ALGS) | {"RS384", "RS512", "ES256K", "Ed25519", "Ed448"}

#: A proof larger than this is refused unread (an RSA-4096 key makes one of ~1.5 kB).
MAX_PROOF_BYTES = 8192
#: Longest ``jti`` kept (it is hashed into a cache key, but a client gets no unbounded field).
MAX_JTI_LENGTH = 256
#: RSA keys shorter than this are refused (NIST SP 800-131A).
MIN_RSA_BITS = 2048
#: JWK members that only a private (or symmetric) key has (RFC 7518 6.2.2, 6.3.2, 6.4; RFC 8037 2).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
_NONCE_SALT = "offline_access.dpop.nonce"
_REPLAY_PREFIX = "offline_access:dpop:jti"


class DPoPError(Exception):
    """A proof that cannot be accepted: ``invalid_dpop_proof`` or ``use_dpop_nonce`` (RFC 9449 5, 8)."""

    def __init__(self, description: str, *, error: str = "invalid_dpop_proof"):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Proof:
    """A proof that passed every check of RFC 9449 4.3: what the rest of the app needs of it."""

    #: RFC 7638 SHA-256 thumbprint of the proof's key, base64url: what tokens are bound to.
    jkt: str
    jti: str
    iat: int | float


# Pieces ---------------------------------------------------------------------------


def signing_algs() -> list[str]:
    """The JWS algorithms accepted in proofs (and listed as ``dpop_signing_alg_values_supported``)."""
    configured = settings.DPOP_SIGNING_ALGS
    return [alg for alg in configured if alg in _ASYMMETRIC_ALGS and alg in jws.default_allowed_algs]


def thumbprint(key: jwk.JWK) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url without padding (RFC 9449 6.1 ``jkt``)."""
    return key.thumbprint()


def is_thumbprint(value: Any) -> bool:
    """Whether ``value`` has the shape of a SHA-256 thumbprint (``dpop_jkt``, RFC 9449 10)."""
    return isinstance(value, str) and _THUMBPRINT.fullmatch(value) is not None


def access_token_hash(access_token: str) -> str:
    """RFC 9449 4.2 ``ath``: base64url of the SHA-256 of the token's ASCII bytes."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")


def _normalize_percent(text: str) -> str:
    """RFC 3986 6.2.2.1-2: upper-case percent-encodings, decode the unreserved ones."""

    def fix(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        if char.isascii() and (char.isalnum() or char in "-._~"):
            return char
        return "%" + match.group(1).upper()

    return _UNRESERVED.sub(fix, text)


def normalize_htu(url: str) -> str | None:
    """The HTTP URI of ``url`` for comparison (RFC 9449 4.3 step 9, RFC 3986 6.2.2-6.2.3).

    Query and fragment are ignored; scheme and host lower-cased; the scheme's
    default port dropped; an empty path is ``/``. None when ``url`` is no absolute
    http(s) URI, or carries user information (a target URI has none, RFC 9110 4.2.4).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, _normalize_percent(parts.path) or "/", "", ""))


def request_htu(request: HttpRequest) -> str | None:
    """What a proof for this request must say in ``htu`` (normalized)."""
    return normalize_htu(request.build_absolute_uri(request.path))


# Nonces (RFC 9449 8) ----------------------------------------------------------------


def new_nonce() -> str:
    """A fresh server nonce: random, timestamped and signed with SECRET_KEY (any worker checks it)."""
    return signing.TimestampSigner(salt=_NONCE_SALT).sign(secrets.token_urlsafe(16))


def nonce_is_valid(nonce: Any) -> bool:
    if not isinstance(nonce, str) or len(nonce) > 200:
        return False
    try:
        signing.TimestampSigner(salt=_NONCE_SALT).unsign(
            nonce, max_age=settings.DPOP_NONCE_MAX_AGE.total_seconds()
        )
    except signing.BadSignature:  # SignatureExpired included
        return False
    return True


# The replay store (RFC 9449 11.1) -----------------------------------------------------


def acceptance_window() -> int:
    """Seconds a proof may be accepted for: the cache keeps its ``jti`` at least this long."""
    max_age = settings.DPOP_PROOF_MAX_AGE.total_seconds()
    skew = settings.DPOP_CLOCK_SKEW.total_seconds()
    # Seen at the earliest at iat - skew, acceptable until iat + max_age + skew.
    return int(max_age + 2 * skew) + 1


def remember_jti(jkt: str, jti: str) -> bool:
    """Record a proof's ``jti`` for its key; False when it was recorded already (a replay).

    ``cache.add`` is atomic on shared caches, so of two workers given the same proof
    exactly one gets True. The key hashes ``jkt`` and ``jti`` (Memcached refuses
    arbitrary characters; a client chooses the ``jti``).
    """
    digest = hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
    return caches[settings.DPOP_REPLAY_CACHE].add(f"{_REPLAY_PREFIX}:{digest}", 1, acceptance_window())


# Checking a proof (RFC 9449 4.3) -------------------------------------------------------


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise DPoPError("The DPoP proof is not a well-formed JWT.") from None


def _public_key(header: dict[str, Any]) -> jwk.JWK:
    key_members = header.get("jwk")
    if not isinstance(key_members, dict):
        raise DPoPError("The DPoP proof must carry its public key in the jwk header.")
    if PRIVATE_JWK_MEMBERS & set(key_members):
        raise DPoPError("The jwk header of a DPoP proof must be a public key, never a private one.")
    try:
        key = jwk.JWK(**key_members)
        # jwcrypto accepts an empty member set, then raises (KeyError) on these: inside the try.
        usable = not key.is_symmetric and not key.has_private and key.has_public
    except Exception:  # noqa: BLE001 -- jwcrypto raises many types on garbage; all mean "bad key"
        raise DPoPError("The jwk header of the DPoP proof is not a usable key.") from None
    if not usable:
        raise DPoPError("The jwk header of a DPoP proof must be an asymmetric public key.")
    if key.get("kty") == "RSA":
        try:
            bits = key.get_op_key("verify").key_size
        except Exception:  # noqa: BLE001
            raise DPoPError("The jwk header of the DPoP proof is not a usable key.") from None
        if bits < MIN_RSA_BITS:
            raise DPoPError(f"RSA keys in DPoP proofs must have at least {MIN_RSA_BITS} bits.")
    return key


def validate_proof(
    value: str,
    *,
    method: str,
    url: str | None,
    access_token: str | None = None,
    require_nonce: bool = False,
    now: float | None = None,
    remember: bool = True,
) -> Proof:
    """Check one DPoP proof against the request it came with (RFC 9449 4.3); the :class:`Proof`.

    ``url`` is the request's absolute URI (:func:`request_htu`). With
    ``access_token`` (a resource request, RFC 9449 7) the proof must carry its
    ``ath``. ``remember`` records the ``jti`` (the last step, so that only a proof
    that passed everything else uses one up). Raises :class:`DPoPError`.
    """
    if not isinstance(value, str) or len(value) > MAX_PROOF_BYTES or not _COMPACT_JWS.fullmatch(value):
        raise DPoPError("The DPoP header must be one JWT in compact serialization.")
    header_segment, payload_segment, _signature = value.split(".")
    header = _b64_json(header_segment)
    if not isinstance(header, dict):
        raise DPoPError("The DPoP proof is not a well-formed JWT.")
    if header.get("typ") != PROOF_TYPE:
        raise DPoPError(f'A DPoP proof must have typ "{PROOF_TYPE}" in its header.')
    alg = header.get("alg")
    allowed = signing_algs()
    if not isinstance(alg, str) or alg not in allowed:
        raise DPoPError(f"The DPoP proof's alg must be one of: {', '.join(allowed)}.")
    if "crit" in header or "b64" in header:
        raise DPoPError("The DPoP proof uses JWS extensions this server does not support.")
    key = _public_key(header)
    token = jws.JWS()
    token.allowed_algs = allowed
    try:
        token.deserialize(value)
        token.verify(key, alg=alg)
    except Exception:  # noqa: BLE001 -- any failure here is a proof that does not verify
        raise DPoPError("The DPoP proof's signature does not verify with its jwk.") from None
    claims = _b64_json(payload_segment)
    if not isinstance(claims, dict):
        raise DPoPError("The DPoP proof's payload must be a JSON object.")
    _check_claims(claims, method=method, url=url, access_token=access_token, now=now)
    jkt = thumbprint(key)
    if require_nonce and not nonce_is_valid(claims.get("nonce")):
        raise DPoPError(
            "Send a DPoP proof with the nonce from the DPoP-Nonce header.", error="use_dpop_nonce"
        )
    if remember and not remember_jti(jkt, claims["jti"]):
        raise DPoPError("This DPoP proof was used already (its jti has been seen): make a new one.")
    return Proof(jkt=jkt, jti=claims["jti"], iat=claims["iat"])


def _check_claims(claims: dict, *, method: str, url: str | None, access_token: str | None, now) -> None:
    jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise DPoPError(
            f"The DPoP proof needs a jti (a unique string of at most {MAX_JTI_LENGTH} characters)."
        )
    if htm != method:
        raise DPoPError(f"The DPoP proof's htm must be the request's method, {method}.")
    if not isinstance(htu, str) or url is None or normalize_htu(htu) != normalize_htu(url):
        raise DPoPError("The DPoP proof's htu must be this endpoint's URL (without query or fragment).")
    if isinstance(iat, bool) or not isinstance(iat, (int, float)) or iat != iat:  # NaN
        raise DPoPError("The DPoP proof needs an iat (seconds since the epoch).")
    now = time.time() if now is None else now
    skew = settings.DPOP_CLOCK_SKEW.total_seconds()
    if iat > now + skew:
        raise DPoPError("The DPoP proof's iat is in the future: check the client's clock.")
    if iat < now - settings.DPOP_PROOF_MAX_AGE.total_seconds() - skew:
        raise DPoPError("The DPoP proof is too old (iat): make a new proof for each request.")
    if access_token is not None:
        if claims.get("ath") != access_token_hash(access_token):
            raise DPoPError("The DPoP proof's ath must be the hash of the access token sent with it.")


def proof_header(request: HttpRequest) -> str | None:
    """The request's one DPoP header, or None; two of them is an error (RFC 9449 4.3 step 1).

    WSGI servers join repeated header fields with commas, and a compact JWT has
    none, so a comma means more than one header.
    """
    value = request.META.get("HTTP_DPOP")
    if value is None:
        return None
    if "," in value:
        raise DPoPError("Send exactly one DPoP header.")
    return value.strip()


def check_request(
    request: HttpRequest, *, access_token: str | None = None, require_nonce: bool = False
) -> Proof | None:
    """The request's checked proof, None without a DPoP header; raises :class:`DPoPError`."""
    value = proof_header(request)
    if value is None:
        return None
    return validate_proof(
        value,
        method=request.method or "",
        url=request_htu(request),
        access_token=access_token,
        require_nonce=require_nonce,
    )


def proof_of(oauthlib_request) -> Proof | None:
    """The proof the view checked for this oauthlib request, or None (also when no view checked)."""
    headers = getattr(oauthlib_request, "headers", None) or {}
    proof = headers.get(META_KEY)
    return proof if isinstance(proof, Proof) else None


# Answers ---------------------------------------------------------------------------------


def token_error_response(error: DPoPError) -> JsonResponse:
    """RFC 9449 5 / 8: a 400 at the token endpoint, with a fresh nonce when one is asked for."""
    response = JsonResponse(
        {"error": error.error, "error_description": error.description},
        status=400,
        headers={"Cache-Control": "no-store"},
    )
    if error.error == "use_dpop_nonce" or settings.DPOP_NONCE_REQUIRED:
        response["DPoP-Nonce"] = new_nonce()
    return response


def resource_challenge(error: str | None = None, description: str | None = None) -> str:
    """RFC 9449 7.1: the ``WWW-Authenticate: DPoP`` challenge of a resource endpoint."""
    params = []
    if error:
        params.append(f'error="{error}"')
    if description:
        params.append('error_description="{}"'.format(description.replace('"', "'")))
    params.append('algs="{}"'.format(" ".join(signing_algs())))
    return "DPoP " + ", ".join(params)


def authorization_token(request: HttpRequest) -> tuple[str, str] | None:
    """``(scheme, token)`` of the Authorization header, scheme lower-cased; None without one."""
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2:
        return None
    return parts[0].lower(), parts[1]


def prepare_resource_request(request: HttpRequest) -> None:
    """Make a ``DPoP``-scheme request readable by DOT's resource protection (RFC 9449 7.1).

    oauthlib only reads ``Authorization: Bearer``. For ``Authorization: DPoP <token>``
    the proof (with ``ath``) is checked here, then the header is handed on as
    Bearer with the checked proof beside it under :data:`META_KEY`; the validator
    (``validate_bearer_token``) then accepts a bound token only with a proof of its
    key, and refuses a bound token sent as Bearer (RFC 9449 7.2). Raises
    :class:`DPoPError` for a bad proof; leaves other requests as they are.
    """
    presented = authorization_token(request)
    if presented is None or presented[0] != "dpop":
        request.META.pop(META_KEY, None)
        return
    proof = check_request(request, access_token=presented[1])
    if proof is None:
        raise DPoPError("A DPoP-bound access token needs a DPoP proof header.")
    request.META["HTTP_AUTHORIZATION"] = f"Bearer {presented[1]}"
    request.META[META_KEY] = proof


def resource_error_response(error: DPoPError) -> JsonResponse:
    """RFC 9449 7.1: a 401 with a ``DPoP`` challenge naming the error, at a resource endpoint."""
    response = JsonResponse({"error": error.error, "error_description": error.description}, status=401)
    response["WWW-Authenticate"] = resource_challenge(error.error, error.description)
    response["Cache-Control"] = "no-store"
    return response


def accepts_dpop(view):
    """Decorator: a DOT-protected resource view (or any view using DOT's ``verify_request``)
    accepts ``Authorization: DPoP`` tokens with their proofs (RFC 9449 7).

    Bearer requests pass unchanged, except that a DPoP-bound token is refused as
    bearer (by the validator). A 401 also names the DPoP scheme in its challenge.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            prepare_resource_request(request)
        except DPoPError as error:
            return resource_error_response(error)
        response = view(request, *args, **kwargs)
        if response.status_code == 401:
            presented_dpop = isinstance(request.META.get(META_KEY), Proof)
            challenge = resource_challenge("invalid_token" if presented_dpop else None)
            existing = response.get("WWW-Authenticate")
            response["WWW-Authenticate"] = (
                challenge if presented_dpop or not existing else f"{existing}, {challenge}"
            )
        return response

    return wrapper


# Maintenance ------------------------------------------------------------------------------------


def delete_expired_bindings(*, batch_size: int = 1000) -> int:
    """Delete the bindings of access tokens that have expired; returns how many rows went.

    A binding (:class:`~offline_access.models.DPoPBoundAccessToken`) is read only
    together with a live access token of the same ``token_checksum``, and only
    ever adds a requirement (a proof of its key): an expired row authorizes
    nothing, it just takes room. So the token endpoint no longer deletes them on
    every DPoP request; the maintenance command calls this instead. It relies on
    ``expires_at`` being the bound token's own ``expires``
    (:func:`offline_access.services.bind_access_token`), which nothing extends
    without giving the token a new value and checksum: a binding is never
    deleted while its token still works.

    Batched by primary key: each batch is one SELECT of at most ``batch_size``
    ids (the ``expires_at`` index) and one DELETE of those ids, each in its own
    short transaction (autocommit), so memory stays bounded and no lock is held
    across batches. Rows expiring while it runs are left for the next run.
    """
    from django.utils import timezone

    from .models import DPoPBoundAccessToken

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    now = timezone.now()
    expired = DPoPBoundAccessToken.objects.filter(expires_at__lte=now).order_by("pk")
    deleted, last_pk = 0, 0
    while True:
        pks = list(expired.filter(pk__gt=last_pk).values_list("pk", flat=True)[:batch_size])
        if not pks:
            return deleted
        last_pk = pks[-1]
        deleted += DPoPBoundAccessToken.objects.filter(pk__in=pks).delete()[0]
        if len(pks) < batch_size:
            return deleted


def __getattr__(name: str):
    # The DRF class lives with the REST API (DRF is an optional dependency).
    if name == "DPoPAuthentication":
        from .api.authentication import DPoPAuthentication

        return DPoPAuthentication
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
