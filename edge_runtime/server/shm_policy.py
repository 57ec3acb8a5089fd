"""Which POSIX shared-memory objects a client may register as system shared-memory regions.

The server opens objects with its own uid (root bypasses permission checks), so a client could
name an object it cannot open itself and make the server read or overwrite it (a confused
deputy; docs/security.md). TCP does not tell the server who the client is, so the policy is
about the object, from :class:`SharedMemorySettings`: allowed key prefixes (checked on the key,
before anything is opened), then, with ``fstat`` on the opened descriptor (no race with the
path): a regular file only, allowed owners, never an object the server's own user owns unless
``allow_server_owned``, and only objects their owner shares (a group or other permission bit set).
"""

from __future__ import annotations

import os
import pwd
import stat
from typing import FrozenSet, Optional

from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.errors import ConfigError, SharedMemoryError

_SHARED_BITS = stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH


class SharedMemoryPolicy:
    """The key and owner rules of ``shared_memory`` settings; raises SharedMemoryError naming the region."""

    def __init__(self, settings: SharedMemorySettings, server_uid: Optional[int] = None) -> None:
        """``server_uid``: the server's effective uid (default: this process's)."""
        self._prefixes = settings.key_prefixes
        self._owners = resolve_owners(settings)
        self._allow_server_owned = settings.allow_server_owned
        self._server_uid = os.geteuid() if server_uid is None else server_uid

    def check_key(self, name: str, key: str) -> None:
        """Refuse a key outside the allowed prefixes (which apply to the key with its leading '/')."""
        slashed = key if key.startswith("/") else "/" + key
        if self._prefixes and not any(slashed.startswith(prefix) for prefix in self._prefixes):
            raise SharedMemoryError(
                f"shared memory region {name!r}: key {key!r} does not start with an allowed prefix "
                f"({', '.join(self._prefixes)}; shared_memory.key_prefixes)"
            )

    def check_object(self, name: str, key: str, info: os.stat_result) -> None:
        """Refuse an opened object (its ``fstat``) that is not a regular file or whose owner the rules exclude."""
        where = f"shared memory region {name!r}: key {key!r}"
        if not stat.S_ISREG(info.st_mode):
            raise SharedMemoryError(f"{where} is not a shm object")
        if info.st_uid == self._server_uid:
            if not self._allow_server_owned:
                raise SharedMemoryError(
                    f"{where} is owned by the server's own user, which clients may not register "
                    "(shared_memory.allow_server_owned is false; see docs/security.md)"
                )
            return
        if self._owners and info.st_uid not in self._owners:
            raise SharedMemoryError(f"{where}: its owner (uid {info.st_uid}) is not in shared_memory.allowed_owners")
        if not info.st_mode & _SHARED_BITS:
            raise SharedMemoryError(
                f"{where} is private to its owner (mode {stat.S_IMODE(info.st_mode):04o}): an app shares it "
                "with the runtime by making it 0660 with the runtime's group (docs/security.md)"
            )


def resolve_owners(settings: SharedMemorySettings) -> FrozenSet[int]:
    """The uids of ``shared_memory.allowed_owners`` (user names looked up); ConfigError for an unknown name."""
    uids = set()
    for owner in settings.allowed_owners:
        if isinstance(owner, int):
            uids.add(owner)
            continue
        try:
            uids.add(pwd.getpwnam(owner).pw_uid)
        except KeyError:
            raise ConfigError(f"shared_memory.allowed_owners: no user named {owner!r} on this system") from None
    return frozenset(uids)
