"""The RSA key the demo OpenID Provider signs ID tokens with (RS256)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def generate_rsa_private_key_pem() -> str:
    """Return a new 2048-bit RSA private key as an unencrypted PKCS#8 PEM string."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")


def load_or_create_rsa_private_key(path: Path) -> str:
    """Read the PEM key at ``path``, creating it (mode 0600) on first use.

    The key must survive restarts: a new key on every start would make
    the signature of every ID token already issued fail to verify.
    """
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temporary file, then link it into place: os.link fails if
    # the key appeared meanwhile (another process won the race), and no reader
    # ever sees a half-written key.
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as key_file:
            key_file.write(generate_rsa_private_key_pem())
        try:
            os.link(tmp_path, path)
        except FileExistsError:
            pass
    finally:
        tmp_path.unlink()
    return path.read_text(encoding="ascii")
