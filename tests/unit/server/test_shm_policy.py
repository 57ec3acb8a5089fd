"""Which shm objects clients may register: key prefixes, object type, owners, sharing (no /dev/shm, no root)."""

from __future__ import annotations

import os
import stat

import pytest

from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.errors import ConfigError, SharedMemoryError
from edge_runtime.server.shm_policy import SharedMemoryPolicy, resolve_owners

SERVER_UID, APP_UID, OTHER_UID = 990, 1000, 1001


def _info(uid: int, mode: int, kind: int = stat.S_IFREG) -> os.stat_result:
    """What fstat says of an object: its type and permission bits, its owner."""
    return os.stat_result((kind | mode, 1, 1, 1, uid, uid, 4096, 0, 0, 0))


def _policy(**settings: object) -> SharedMemoryPolicy:
    return SharedMemoryPolicy(SharedMemorySettings(**settings), server_uid=SERVER_UID)  # type: ignore[arg-type]


def test_key_prefixes_limit_what_may_be_registered() -> None:
    policy = _policy(key_prefixes=("/app-", "/cam"))
    with pytest.raises(SharedMemoryError, match=r"key '/db-x' does not start with an allowed prefix \(/app-, /cam; sh"):
        policy.check_key("r", "/db-x")
    policy.check_key("r", "/app-input")
    policy.check_key("r", "cam0")  # the prefix applies to the key with its leading '/'
    _policy().check_key("r", "/anything")  # no prefixes: every key


def test_an_object_of_the_servers_own_user_is_refused_unless_allowed() -> None:
    with pytest.raises(SharedMemoryError, match=r"region 'r': key '/k' is owned by the server's own user"):
        _policy().check_object("r", "/k", _info(SERVER_UID, 0o666))
    _policy(allow_server_owned=True).check_object("r", "/k", _info(SERVER_UID, 0o600))  # private is fine then


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_an_object_its_owner_does_not_share_is_refused(mode: int) -> None:
    with pytest.raises(SharedMemoryError, match=rf"is private to its owner \(mode 0{mode:o}\)"):
        _policy().check_object("r", "/k", _info(APP_UID, mode))


@pytest.mark.parametrize("mode", [0o660, 0o640, 0o606, 0o604])
def test_an_object_shared_by_group_or_others_is_accepted(mode: int) -> None:
    _policy().check_object("r", "/k", _info(APP_UID, mode))


def test_allowed_owners_limit_whose_objects_may_be_registered() -> None:
    policy = _policy(allowed_owners=(APP_UID,))
    with pytest.raises(SharedMemoryError, match=rf"its owner \(uid {OTHER_UID}\) is not in shared_memory.allowed_"):
        policy.check_object("r", "/k", _info(OTHER_UID, 0o660))
    policy.check_object("r", "/k", _info(APP_UID, 0o660))
    with pytest.raises(SharedMemoryError, match="is private to its owner"):  # an allowed owner must still share it
        policy.check_object("r", "/k", _info(APP_UID, 0o600))


@pytest.mark.parametrize("kind", [stat.S_IFDIR, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFLNK])
def test_only_a_regular_file_is_a_shm_object(kind: int) -> None:
    with pytest.raises(SharedMemoryError, match=r"key '/k' is not a shm object"):
        _policy(allow_server_owned=True).check_object("r", "/k", _info(APP_UID, 0o666, kind))


def test_allowed_owners_are_uids_or_user_names() -> None:
    assert resolve_owners(SharedMemorySettings(allowed_owners=(1234, "root"))) == frozenset({1234, 0})


def test_allowed_owner_names_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"shared_memory.allowed_owners: no user named 'no-such-user-x'"):
        SharedMemoryPolicy(SharedMemorySettings(allowed_owners=("no-such-user-x",)))


def test_the_server_uid_defaults_to_this_process() -> None:
    with pytest.raises(SharedMemoryError, match="owned by the server's own user"):
        SharedMemoryPolicy(SharedMemorySettings()).check_object("r", "/k", _info(os.geteuid(), 0o666))
