"""What cli.py and sync.py share: endpoints, the token and key files, refreshing and userinfo.

The token file holds the token endpoint's JSON answer (``access_token``,
``refresh_token``, ``expires_at``, ``scope``, ``token_type`` ``DPoP``...). A
refresh token is a password to the user's account for as long as the consent
lasts, so the file is written only its owner can read (0600, in a 0700
directory), atomically, and a file that group or others can read is refused
rather than used. POSIX only.

Next to it, the key file holds the device's private DPoP key (a JWK, RFC 9449):
the server binds the tokens to it, so the token file alone cannot refresh. It is
created once, by the first sign-in, the same way (0600 from the start, never
replaced), and refused the same way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from jwcrypto import jwk

if __package__:
    from . import _dpop
else:  # run as a file: python example_project/clients/cli.py
    import _dpop

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_CLIENT_ID = "demo-cli"
#: Seconds before an HTTP request to the server is abandoned.
HTTP_TIMEOUT = 30
CLI_COMMAND = "python -m example_project.clients.cli"


def default_token_path() -> Path:
    return Path.home() / ".config" / "offline-access-demo" / "token.json"


class ClientError(Exception):
    """A failure explained to the user; ``exit_code`` is the process's exit status."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class SignInRequired(ClientError):
    """No usable grant: a person has to sign in again (no token file, or access revoked/expired)."""

    exit_code = 2


class UnsafeTokenFile(ClientError):
    """The token file can be read or changed by someone other than its owner."""

    exit_code = 3


@dataclass(frozen=True)
class Endpoints:
    """The demo site's OAuth endpoints (DOT's URLs under ``/o/``)."""

    base_url: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def device_authorization(self) -> str:
        return f"{self.base_url}/o/device-authorization/"

    @property
    def token(self) -> str:
        return f"{self.base_url}/o/token/"

    @property
    def revocation(self) -> str:
        return f"{self.base_url}/o/revoke_token/"

    @property
    def userinfo(self) -> str:
        return f"{self.base_url}/o/userinfo/"

    @property
    def connected_apps(self) -> str:
        return f"{self.base_url}/o/connected-apps/"


def login_command(base_url: str, token_path: Path) -> str:
    """The command line that signs in again with the same server and token file."""
    command = CLI_COMMAND
    if base_url.rstrip("/") != DEFAULT_BASE_URL:
        command += f" --base-url {base_url.rstrip('/')}"
    if token_path != default_token_path():
        command += f" --token-file {token_path}"
    return command + " login"


def session(client_id: str, token: dict[str, Any] | None = None, key: jwk.JWK | None = None) -> OAuth2Session:
    """An Authlib session for a public client: it sends ``client_id`` and no secret.

    With ``key``, every token request carries a DPoP proof of that key and the
    access token is used as a DPoP token (:mod:`_dpop`). Use it in a ``with``
    block: closing it closes its keep-alive connections.
    """
    options: dict[str, Any] = {
        "client_id": client_id,
        "token_endpoint_auth_method": "none",
        "revocation_endpoint_auth_method": "none",
        "token": token,
        "default_timeout": HTTP_TIMEOUT,
    }
    if key is None:
        return OAuth2Session(**options)
    return _dpop.DPoPSession(key=key, **options)


# The token file -----------------------------------------------------------------------


@contextlib.contextmanager
def locked(token_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the token's directory while reading, refreshing and saving.

    With rotation every refresh spends the stored refresh token: without the lock
    a cron job and an interactive run could refresh with the same token and one
    of them would save a token the server already replaced.
    """
    directory = ensure_private_directory(token_path.parent)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_private_directory(directory: Path) -> Path:
    """Create the token's directory readable by its owner only (0700) when it does not exist."""
    if not directory.is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)  # mkdir's mode is reduced by the umask
    return directory


def save_token(token_path: Path, token: dict[str, Any]) -> None:
    """Write the token atomically, readable and writable by its owner only (0600).

    The file is created under a new temporary name with O_EXCL, so an existing
    file or symbolic link there is never followed or reused, then renamed over
    the old one: a reader sees the old token or the new one, never half of one.
    """
    directory = ensure_private_directory(token_path.parent)
    temporary = directory / f".{token_path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(dict(token), file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, token_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def read_private_file(path: Path, base_url: str, token_path: Path, holds: str) -> str | None:
    """The text of ``path`` (the token file or its key file), or None when there is no such file.

    Refuses (:class:`UnsafeTokenFile`) a symbolic link, anything but a regular
    file, another user's file, and a file group or others may read or change;
    ``holds`` says in the message what the file would give away.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeTokenFile(f"Refusing to read {path}: it is a symbolic link.") from None
        raise ClientError(f"Cannot read {path}: {error.strerror}.") from None
    with os.fdopen(fd, encoding="utf-8") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeTokenFile(f"Refusing to read {path}: it is not a regular file.")
        if info.st_uid != os.getuid():
            raise UnsafeTokenFile(f"Refusing to read {path}: it belongs to another user.")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise UnsafeTokenFile(
                f"Refusing to read {path}: its permissions ({mode:04o}) let other users read or "
                f"change it, and it holds {holds}.\n"
                f"If nobody else could have read it, make it private with:\n    chmod 600 {path}\n"
                f"Otherwise revoke the access on {Endpoints(base_url).connected_apps}, delete the file "
                f"and sign in again with:\n    {login_command(base_url, token_path)}"
            )
        try:
            return file.read()
        except UnicodeDecodeError:
            return ""


def load_token(token_path: Path, base_url: str) -> dict[str, Any]:
    """Read the stored token, refusing a file that others can read or that is not the user's."""
    text = read_private_file(token_path, base_url, token_path, "a refresh token to your account")
    if text is None:
        raise SignInRequired(
            f"Not signed in: there is no token file at {token_path}.\n"
            f"Sign in with:\n    {login_command(base_url, token_path)}"
        )
    try:
        token = json.loads(text)
    except ValueError:
        token = None
    if not isinstance(token, dict) or "access_token" not in token:
        raise SignInRequired(
            f"The token file {token_path} is damaged. Delete it and sign in again with:\n"
            f"    {login_command(base_url, token_path)}"
        )
    return token


def delete_token(token_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        token_path.unlink()


# The key file (DPoP) ----------------------------------------------------------------


def key_path_for(token_path: Path) -> Path:
    """Where the device's DPoP key is kept: next to the token file (``token.dpop-key.json``)."""
    return token_path.with_name(f"{token_path.stem}.dpop-key.json")


def load_key(token_path: Path, base_url: str) -> jwk.JWK | None:
    """The device's private key from its key file, or None when there is no key file."""
    key_path = key_path_for(token_path)
    text = read_private_file(
        key_path, base_url, token_path, "the private key your tokens are bound to (DPoP)"
    )
    if text is None:
        return None
    try:
        key = jwk.JWK.from_json(text)
        usable = key.has_private and key.get("kty") == "EC" and key.get("crv") == "P-256"
    except Exception:  # jwcrypto raises several kinds for a damaged JWK
        usable = False
    if not usable:
        raise SignInRequired(
            f"The key file {key_path} is damaged. The tokens in {token_path} only work with the key that "
            "was in it: delete both files and sign in again with:\n"
            f"    {login_command(base_url, token_path)}"
        )
    return key


def create_key(token_path: Path) -> jwk.JWK:
    """Generate the device's key and write its key file, readable by its owner only from the start.

    The file is created under a temporary name with O_EXCL and mode 0600 (the
    umask can only take permissions away), so it is never readable by others, not
    even for a moment; then it is hard-linked to its name, which fails if a key
    file is there already: a key that tokens may be bound to is never replaced.
    Raises FileExistsError then.
    """
    key = _dpop.generate_key()
    key_path = key_path_for(token_path)
    directory = ensure_private_directory(key_path.parent)
    temporary = directory / f".{key_path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(key.export_private())
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, key_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return key


def key_for_sign_in(token_path: Path, base_url: str) -> jwk.JWK:
    """The device's key: the one in the key file, or a new one at the first sign-in."""
    key = load_key(token_path, base_url)
    if key is not None:
        return key
    try:
        return create_key(token_path)
    except FileExistsError:  # another sign-in on this device created it meanwhile: use that one
        key = load_key(token_path, base_url)
        assert key is not None
        return key


def key_for_token(token_path: Path, token: dict[str, Any], base_url: str) -> jwk.JWK:
    """The key the stored token is bound to.

    A token file from before DPoP (``token_type`` Bearer) gets a new key: its
    first refresh with a proof binds it to that key (RFC 9449 5). A DPoP token
    without its key file cannot be used at all, so it is not even tried.
    """
    key = load_key(token_path, base_url)
    if key is not None:
        return key
    if str(token.get("token_type", "")).lower() == "dpop":
        raise SignInRequired(
            f"The key file {key_path_for(token_path)} is missing. The tokens in {token_path} are bound to "
            "the key that was in it and do not work without it.\n"
            f"If you moved it, put it back; otherwise sign in again with:\n"
            f"    {login_command(base_url, token_path)}"
        )
    return key_for_sign_in(token_path, base_url)


def delete_key(token_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        key_path_for(token_path).unlink()


# Talking to the server ------------------------------------------------------------------


def refresh(
    endpoints: Endpoints, client_id: str, token_path: Path, token: dict[str, Any], key: jwk.JWK
) -> dict[str, Any]:
    """Refresh the stored token with a DPoP proof of ``key``, and save the rotated one (RFC 6749 6).

    ``invalid_grant`` means the grant behind the refresh token has ended: the
    user or an administrator revoked it, or it expired. The stale file is deleted
    and :class:`SignInRequired` explains what happened and how to sign in again.
    """
    refresh_token = token.get("refresh_token")
    if not refresh_token:
        delete_token(token_path)
        raise SignInRequired(
            "The server gave this client no offline access (no refresh token), so it cannot keep "
            "you signed in. The token file was deleted.\n"
            f"Sign in again with:\n    {login_command(endpoints.base_url, token_path)}"
        )
    try:
        with session(client_id, key=key) as client:
            # No ``scope``: the refreshed token keeps every scope granted, offline_access included.
            new_token = client.refresh_token(endpoints.token, refresh_token=refresh_token)
    except OAuthError as error:
        if error.error == "invalid_grant":
            delete_token(token_path)
            raise SignInRequired(access_ended_message(endpoints, token_path)) from None
        raise ClientError(f"The server refused to refresh the token: {describe(error)}.") from None
    save_token(token_path, new_token)
    return dict(new_token)


def access_ended_message(endpoints: Endpoints, token_path: Path) -> str:
    return (
        f"Access to your account at {endpoints.base_url} has ended: it was revoked (for example on the "
        f"connected apps page, {endpoints.connected_apps}, or by an administrator) or it expired "
        "after a long time unused.\n"
        f"The stale token file {token_path} was deleted. To give this client access again, sign in with:\n"
        f"    {login_command(endpoints.base_url, token_path)}"
    )


def userinfo(endpoints: Endpoints, client_id: str, token: dict[str, Any], key: jwk.JWK) -> dict[str, Any]:
    """Call the OpenID Connect userinfo endpoint with the access token (and a proof of ``key``)."""
    with session(client_id, token=token, key=key) as client:
        response = client.get(endpoints.userinfo)
    if response.status_code != 200:
        raise ClientError(f"The userinfo endpoint answered HTTP {response.status_code}.")
    return response.json()


def describe(error: OAuthError) -> str:
    return f"{error.error} ({error.description})" if error.description else str(error.error)


def unreachable_message(base_url: str, error: requests.RequestException) -> str:
    return f"Cannot talk to the server at {base_url}: {error}"
