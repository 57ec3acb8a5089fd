"""Bearer tokens for devices and operators: issued once, stored only as HMAC-SHA256 digests.

A token is ``secrets.token_urlsafe(32)`` (256 random bits), so a keyed fast hash is enough to make
a stolen table useless (a slow password hash buys nothing against that entropy and would cost
every ingest request milliseconds). The key is the server's secret file, shared by every server
instance. A request's token is digested and looked up by its digest (an index lookup); the stored
digest is then compared with :func:`hmac.compare_digest`. Revoking sets ``revoked``; rotating
revokes every live token of the device and issues a new one in the same transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sqlalchemy import Connection, insert, select, update

from fleet_server.errors import DeviceExistsError, DeviceNotFoundError, SecretError, UnauthorizedError
from fleet_server.models import Device, DeviceToken, OperatorToken

MIN_SECRET_CHARS = 32


def new_token() -> str:
    """A fresh high-entropy bearer token (shown once, never stored)."""
    return secrets.token_urlsafe(32)


def token_digest(secret: bytes, token: str) -> str:
    """HMAC-SHA256 of ``token`` under the server secret, as hex (what the database stores)."""
    return hmac.new(secret, token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def load_or_create_secret(path: Path) -> bytes:
    """The server secret from ``path``; a new random one (mode 0600) when the file does not exist.

    Creation is race-free between processes: the secret is written to a temporary file and
    hard-linked into place, so a concurrent reader sees either no file or the whole secret.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race: use its secret
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        return _read_secret(path)
    except OSError as exc:
        raise SecretError(f"{path}: cannot create the server secret: {exc.strerror or exc}") from exc


def _read_secret(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{path}: cannot read the server secret: {exc}") from exc
    if len(text) < MIN_SECRET_CHARS:
        raise SecretError(f"{path}: the server secret is too short (want at least {MIN_SECRET_CHARS} characters)")
    return text.encode("ascii")


@dataclass(frozen=True)
class DeviceIdentity:
    """Whom a device token belongs to."""

    device_pk: int
    device_id: str


def authenticate_device(connection: Connection, secret: bytes, token: Optional[str]) -> DeviceIdentity:
    """The device a live token belongs to; UnauthorizedError for none, unknown, revoked or rotated-away."""
    if not token:
        raise UnauthorizedError("missing bearer token")
    digest = token_digest(secret, token)
    row = connection.execute(
        select(DeviceToken.digest, Device.id, Device.device_id)
        .join(Device, Device.id == DeviceToken.device_pk)
        .where(DeviceToken.digest == digest, DeviceToken.revoked.is_(None))
    ).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        raise UnauthorizedError("unknown or revoked token")
    return DeviceIdentity(int(row[1]), str(row[2]))


def authenticate_operator(connection: Connection, secret: bytes, token: Optional[str]) -> str:
    """The name of the operator a live operator token belongs to; UnauthorizedError otherwise."""
    if not token:
        raise UnauthorizedError("missing bearer token")
    digest = token_digest(secret, token)
    row = connection.execute(
        select(OperatorToken.digest, OperatorToken.name)
        .where(OperatorToken.digest == digest, OperatorToken.revoked.is_(None))
    ).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        raise UnauthorizedError("unknown or revoked operator token")
    return str(row[1])


def enroll_device(connection: Connection, secret: bytes, device_id: str, now: float,
                  device_class: Optional[str] = None) -> str:
    """Create a device (of ``device_class``: what rollouts target) and its first token, returned once.

    DeviceExistsError if the device is already enrolled.
    """
    exists = connection.execute(select(Device.id).where(Device.device_id == device_id)).first()
    if exists is not None:
        raise DeviceExistsError(f"device {device_id!r} is already enrolled: rotate its token instead")
    device_pk = connection.execute(
        insert(Device).values(device_id=device_id, device_class=device_class, created=now, dropped=0)
        .returning(Device.id)
    ).scalar_one()
    return _issue(connection, secret, int(device_pk), now)


def rotate_device_token(connection: Connection, secret: bytes, device_id: str, now: float) -> str:
    """Revoke every live token of the device and issue a new one (returned once)."""
    device_pk = _device_pk(connection, device_id)
    _revoke_all(connection, device_pk, now)
    return _issue(connection, secret, device_pk, now)


def revoke_device_tokens(connection: Connection, device_id: str, now: float) -> None:
    """Revoke every live token of the device: it can no longer ingest until rotated."""
    _revoke_all(connection, _device_pk(connection, device_id), now)


def create_operator_token(connection: Connection, secret: bytes, name: str, now: float) -> str:
    """A new operator token named ``name`` (returned once)."""
    token = new_token()
    connection.execute(insert(OperatorToken).values(name=name, digest=token_digest(secret, token), created=now))
    return token


def revoke_operator_tokens(connection: Connection, name: str, now: float) -> int:
    """Revoke every live operator token named ``name``; how many there were."""
    result = connection.execute(update(OperatorToken)
                                .where(OperatorToken.name == name, OperatorToken.revoked.is_(None))
                                .values(revoked=now))
    return int(result.rowcount or 0)


def _issue(connection: Connection, secret: bytes, device_pk: int, now: float) -> str:
    token = new_token()
    connection.execute(insert(DeviceToken).values(device_pk=device_pk, digest=token_digest(secret, token), created=now))
    return token


def _revoke_all(connection: Connection, device_pk: int, now: float) -> None:
    connection.execute(update(DeviceToken)
                       .where(DeviceToken.device_pk == device_pk, DeviceToken.revoked.is_(None))
                       .values(revoked=now))


def _device_pk(connection: Connection, device_id: str) -> int:
    row = connection.execute(select(Device.id).where(Device.device_id == device_id)).first()
    if row is None:
        raise DeviceNotFoundError(f"no enrolled device {device_id!r}")
    return int(row[0])
