"""Key rotation for the fleet's TUF repository: a new root version that devices follow by themselves.

TUF rotates keys through root: root N+1 lists the new keys and is signed by a threshold of root
N's keys **and** of its own, so a device holding root N accepts N+1 (ngclient walks the versions
one by one) and from then on trusts only the new keys. :func:`rotate_keys` does that for any of
the roles:

- ``root``: a fresh root key written to ``new_root_keys_dir`` (keep it offline, as the first);
  the old root key (``root_keys_dir``) is needed once, to sign N+1.
- ``timestamp``, ``snapshot``, ``targets``: a fresh online key replaces ``keys_dir/<role>.pem``
  (the old one is kept as ``<role>.pem.retired-<N>`` for the record; it is no longer trusted).
- ``director``: not a root role (top-level targets delegates to it), so its rotation is a new
  targets version whose delegations name the new key, and every bin re-signed with it.

Whatever rotated, the metadata the new keys sign is re-signed and published in one locked step:
the new root file first, then targets and bins, snapshot, and ``timestamp.json`` last. A device
refreshing in the instant between root and timestamp refuses that refresh and succeeds on the next.
A compromised online key is rotated the same way; the old root's expiry is not extended by this.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from fleet_server.tuf_repository import (
    DIRECTOR_KEY,
    ONLINE_ROLES,
    Expiry,
    _publish_snapshot,
    _write_key,
    _write_metadata,
    load_signer,
    publish_roles,
    read_current,
    repository_lock,
)

ROTATABLE = ("root", *ONLINE_ROLES, DIRECTOR_KEY)


def rotate_keys(repo_dir: Path, keys_dir: Path, root_keys_dir: Path, roles: Sequence[str],
                new_root_keys_dir: Optional[Path] = None, expiry: Optional[Expiry] = None,
                now: Optional[datetime] = None) -> int:
    """Give each role in ``roles`` a fresh key and publish root N+1 (signed by old and new root); returns N+1."""
    unknown = sorted(set(roles) - set(ROTATABLE))
    if unknown or not roles:
        raise ValueError(f"roles to rotate: expected some of {', '.join(ROTATABLE)}, got {', '.join(roles) or 'none'}")
    if "root" in roles and new_root_keys_dir is None:
        raise ValueError("rotating the root key needs a directory for the new one (keep it offline)")
    repo_dir, keys_dir, expiry = Path(repo_dir), Path(keys_dir), expiry or Expiry()
    start = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    old_root_signer = load_signer(Path(root_keys_dir), "root")
    with repository_lock(repo_dir):
        current: Metadata[Root] = read_current(repo_dir, "root")
        _check_signer(current.signed, "root", old_root_signer)
        new = Metadata[Root].from_bytes(current.to_bytes())
        new.signed.version += 1
        new.signed.expires = start + expiry.root
        new.signatures.clear()
        root_signers = [old_root_signer]
        fresh = {role: CryptoSigner.generate_ed25519() for role in roles}
        for role in (r for r in roles if r != DIRECTOR_KEY):
            for keyid in list(new.signed.roles[role].keyids):
                new.signed.revoke_key(keyid, role)
            new.signed.add_key(fresh[role].public_key, role)
        if "root" in roles:
            root_signers.append(fresh["root"])
        for signer in root_signers:
            new.sign(signer, append=True)
        _store_keys(keys_dir, new_root_keys_dir, fresh, current.signed.version)
        _write_metadata(repo_dir, new)
        _republish(repo_dir, keys_dir, roles, expiry, start)
    return int(new.signed.version)


def _check_signer(root: Root, role: str, signer: CryptoSigner) -> None:
    if signer.public_key.keyid not in root.roles[role].keyids:
        raise ValueError(f"the given {role} key is not one the current root lists for {role}")


def _store_keys(keys_dir: Path, new_root_keys_dir: Optional[Path], fresh: Any, old_version: int) -> None:
    """Write the new private keys; an online role's old key file is renamed aside, never overwritten."""
    for role, signer in fresh.items():
        if role == "root":
            assert new_root_keys_dir is not None
            _write_key(Path(new_root_keys_dir), "root", signer)
            continue
        old = keys_dir / f"{role}.pem"
        if old.exists():
            os.replace(old, keys_dir / f"{role}.pem.retired-{old_version}")
        _write_key(keys_dir, role, signer)


def _republish(repo_dir: Path, keys_dir: Path, roles: Sequence[str], expiry: Expiry, now: datetime) -> None:
    """Re-sign what the rotated keys sign; always a new snapshot and timestamp (signed by today's keys)."""
    if "targets" in roles or DIRECTOR_KEY in roles:
        targets = read_current(repo_dir, "targets")
        changed: List[Tuple[str, Metadata[Any]]] = [("targets", targets)]
        delegations = targets.signed.delegations
        if DIRECTOR_KEY in roles and delegations is not None and delegations.roles:
            director = load_signer(keys_dir, DIRECTOR_KEY).public_key
            for name in list(delegations.roles):
                for keyid in list(delegations.roles[name].keyids):
                    targets.signed.revoke_key(keyid, name)
                targets.signed.add_key(director, name)
                changed.append((name, read_current(repo_dir, name)))
        publish_roles(repo_dir, keys_dir, changed, expiry, now)
        return
    snapshot = read_current(repo_dir, "snapshot")
    timestamp = read_current(repo_dir, "timestamp")
    meta = {name: m.version for name, m in snapshot.signed.meta.items()}
    _publish_snapshot(repo_dir, keys_dir, expiry, now, meta, timestamp.signed.version + 1,
                      snapshot.signed.version + 1)
