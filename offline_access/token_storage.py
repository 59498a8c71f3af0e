"""Tokens at rest: what the database keeps of each DOT credential (issue 9).

A copy of the database alone must not yield one usable credential (RFC 9700
4.14 / RFC 6819 5.1.4.1.3). Every access token, refresh token, authorization
code and device code is stored as ``h1$`` followed by the hex HMAC-SHA256 of
its value under a key that lives outside the database; the client gets the
plaintext, every lookup hashes what is presented.

- The key: ``OFFLINE_ACCESS["TOKEN_HASH_KEYS"]``, a list of secrets. The first
  hashes new tokens, all are tried on lookups (one indexed ``IN`` query), so a
  key can be rotated by putting a new one first and dropping the old one once
  the tokens hashed with it have expired. Left empty, the keys are derived from
  ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``, which rotate the same way.
  Each secret is turned into the HMAC key by Django's ``salted_hmac`` (a
  SHA-256 of a purpose string and the secret), so the token hash never equals
  another keyed hash made from the same ``SECRET_KEY``.
- DOT looks access and refresh tokens up by ``token_checksum``, the SHA-256 of
  the ``token`` column (its ``TokenChecksumField`` recomputes it from that column
  on every save). With ``h1$<hmac>`` in the column the checksum is the SHA-256
  of the keyed hash: the unique index still serves every lookup.
- Rows written before this module (plaintext in the column, checksum of the
  plaintext) keep working until ``manage.py hash_stored_tokens`` converts them:
  lookups also try the plain checksum, except for a presented value that itself
  looks like a stored hash, which is how a copied ``h1$`` value could otherwise
  pass as a legacy token.
- A refresh retried within DOT's grace period must get the pair it already got.
  The database cannot hand it back (it holds hashes only), so rotation stores
  the successor pair sealed with AES-256-GCM under a key derived (HKDF-SHA256)
  from the *predecessor's* plaintext: only the holder of that refresh token can
  open it, a database copy cannot (:func:`seal_pair`, :func:`open_pair`).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextvars import ContextVar
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import salted_hmac

from .conf import settings

#: Marks a stored value as a keyed hash (version 1: HMAC-SHA256, hex).
PREFIX = "h1$"
#: The purpose string mixed into every key, so these hashes are not reusable elsewhere.
KEY_SALT = "offline_access.token_storage"
#: HKDF "info" of the key that seals a successor pair (RFC 5869 3.2: binds the key to its use).
SEAL_INFO = b"offline_access.successor_pair.v1"
_NONCE_BYTES = 12  # AES-GCM's standard nonce length (NIST SP 800-38D 8.2)


def hash_keys() -> list[str | bytes]:
    """The secrets that key token hashes: the first hashes new tokens, all are accepted."""
    keys = settings.TOKEN_HASH_KEYS
    if not keys:
        return [django_settings.SECRET_KEY, *getattr(django_settings, "SECRET_KEY_FALLBACKS", [])]
    if isinstance(keys, (str, bytes)):
        raise ImproperlyConfigured('OFFLINE_ACCESS["TOKEN_HASH_KEYS"] must be a list of secrets, not one.')
    return list(keys)


def digest(value: str, key: str | bytes) -> str:
    """Hex HMAC-SHA256 of ``value`` under one secret (through Django's ``salted_hmac``)."""
    return salted_hmac(KEY_SALT, value, secret=key, algorithm="sha256").hexdigest()


def is_hashed(value: str) -> bool:
    """Whether a value is (or looks like) a keyed hash, and not a plaintext token.

    In any letter case: MySQL's and MariaDB's default collations compare strings
    case-insensitively, so ``H1$<HEX>`` taken for a plaintext would match the
    stored ``h1$<hex>`` (a database copy's value, merely upper-cased).
    """
    return value[: len(PREFIX)].lower() == PREFIX


def stored_value(plaintext: str) -> str:
    """What the database keeps for a new token: ``h1$`` + its keyed hash under the first key."""
    return PREFIX + digest(plaintext, hash_keys()[0])


def stored_candidates(presented: str) -> list[str]:
    """Every stored value that ``presented`` may match: one per key, then a legacy plaintext row.

    A presented value that looks like a stored hash gets no legacy candidate:
    otherwise a hash copied from the database would match its own row.
    """
    candidates = [PREFIX + digest(presented, key) for key in hash_keys()]
    if not is_hashed(presented):
        candidates.append(presented)
    return candidates


def checksum(stored: str) -> str:
    """DOT's ``token_checksum`` of a stored ``token`` column (see ``TokenChecksumField``)."""
    return hashlib.sha256(stored.encode("utf-8")).hexdigest()


def checksum_candidates(presented: str) -> list[str]:
    """The ``token_checksum`` values an access or refresh token presented as ``presented`` may have."""
    return [checksum(candidate) for candidate in stored_candidates(presented)]


def digest_candidates(presented: str) -> list[str]:
    """Bare keyed hashes (no prefix) of ``presented``, one per key; for hashes kept by this app."""
    return [digest(presented, key) for key in hash_keys()]


# The successor pair of a rotation, sealed for the grace period -------------------


def _seal_key(predecessor: str, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=SEAL_INFO).derive(
        predecessor.encode("utf-8")
    )


def _associated_data(predecessor_pk: int) -> bytes:
    # Binds the blob to its row: a blob moved onto another predecessor does not open.
    return f"refresh_token:{predecessor_pk}".encode()


def seal_pair(predecessor: str, predecessor_pk: int, pair: dict[str, Any]) -> bytes:
    """Encrypt a successor pair so that only the holder of the predecessor token can read it.

    Layout: 16 bytes HKDF salt, 12 bytes nonce, AES-256-GCM ciphertext and tag.
    The key exists only while the predecessor's plaintext is at hand (during
    its rotation and its retries); the database keeps the predecessor's hash.
    """
    salt, nonce = os.urandom(16), os.urandom(_NONCE_BYTES)
    plaintext = json.dumps(pair, separators=(",", ":")).encode()
    ciphertext = AESGCM(_seal_key(predecessor, salt)).encrypt(
        nonce, plaintext, _associated_data(predecessor_pk)
    )
    return salt + nonce + ciphertext


def open_pair(predecessor: str, predecessor_pk: int, sealed: bytes) -> dict[str, Any] | None:
    """The pair sealed by :func:`seal_pair`, or None when ``predecessor`` does not open it."""
    sealed = bytes(sealed)
    salt, nonce, ciphertext = sealed[:16], sealed[16 : 16 + _NONCE_BYTES], sealed[16 + _NONCE_BYTES :]
    try:
        plaintext = AESGCM(_seal_key(predecessor, salt)).decrypt(
            nonce, ciphertext, _associated_data(predecessor_pk)
        )
    except (InvalidTag, ValueError):
        return None
    pair = json.loads(plaintext)
    return pair if isinstance(pair, dict) else None


# The access token a token request issued, for the token view's signal -----------

#: Set by the validator when it saves an access token; read by the token view, so
#: that DOT's ``app_authorized`` signal gets its token without a lookup by value.
issued_access_token: ContextVar[Any] = ContextVar("offline_access_issued_access_token", default=None)
