"""Restricted API groups, as Triton's ``--http-restricted-api``: a header ``key: secret`` is required.

Each route belongs to one of Triton's groups (:data:`RESTRICTABLE_GROUPS`), by URL path as in
Triton's ``http_server.cc``: ``health`` (``/v2/health/*``, model ``.../ready``), ``metadata``
(``/v2``, ``/v2/models/<m>[/versions/<v>]``), ``inference`` (``.../infer``), ``model-config``
(``.../config``), ``statistics`` (``/v2/models/stats``, ``.../stats`` and ``/metrics``: Triton
serves metrics on another port, unrestricted; here they share the port and hold the same
counts, so they follow the statistics group), ``model-repository`` (``/v2/repository/*``) and
``shared-memory`` (``/v2/systemsharedmemory/*``, ``/v2/cudasharedmemory/*``).

A request to a restricted group without the header, or with another value, gets Triton's answer:
403 ``{"error": "This API is restricted, expecting header '<key>'"}``. Values are compared in
constant time. Secrets are read once at start, from a file or the environment; none is logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterable, Optional, Sequence, Tuple

from edge_runtime.config import RuntimeSettings
from edge_runtime.config.runtime import RESTRICTABLE_GROUPS, RestrictedApi
from edge_runtime.errors import ConfigError
from edge_runtime.server.admission import json_refusal

log = logging.getLogger(__name__)
__all__ = [
    "RESTRICTABLE_GROUPS",
    "RestrictedApiMiddleware",
    "Restriction",
    "api_group",
    "check_remote_binding",
    "load_restrictions",
]

WsgiApp = Callable[..., Any]
StartResponse = Callable[..., Any]

_BY_PATH = {
    "/v2": "metadata",
    "/v2/health/live": "health",
    "/v2/health/ready": "health",
    "/v2/models/stats": "statistics",
    "/metrics": "statistics",
}
_BY_MODEL_ACTION = {"infer": "inference", "ready": "health", "config": "model-config", "stats": "statistics"}
_REPEATED_SLASHES = re.compile("/{2,}")
# Without these restricted, a server reachable from other hosts lets anyone there load models
# and map memory of this host: binding beyond loopback needs them (or an explicit opt-out).
REMOTE_REQUIRED_GROUPS = ("model-repository", "shared-memory")


def api_group(path: str) -> Optional[str]:
    """Triton's API group of a request path; None for paths that no route serves."""
    if "//" in path:  # werkzeug redirects //a//b to /a/b: classify what the redirect leads to
        path = _REPEATED_SLASHES.sub("/", path)
    group = _BY_PATH.get(path)
    if group is not None:
        return group
    if path.startswith("/v2/repository/"):
        return "model-repository"
    if path.startswith(("/v2/systemsharedmemory/", "/v2/cudasharedmemory/")):
        return "shared-memory"
    if path.startswith("/v2/models/"):
        parts = path[len("/v2/models/"):].split("/")
        action = parts[3:] if len(parts) >= 3 and parts[1] == "versions" else parts[1:]
        return _BY_MODEL_ACTION.get("/".join(action), "metadata")
    return None


@dataclass(frozen=True)
class Restriction:
    """One rule in force: these groups need ``header: secret`` (the secret never shows in a repr)."""

    groups: FrozenSet[str]
    header: str
    secret: bytes = field(repr=False)

    @property
    def environ_key(self) -> str:
        """Where WSGI puts the header: ``HTTP_`` + upper case, dashes as underscores."""
        return "HTTP_" + self.header.upper().replace("-", "_")


def load_restrictions(settings: RuntimeSettings) -> Tuple[Restriction, ...]:
    """The restrictions of ``settings``, each secret read now; a problem is a one-line ConfigError."""
    rules = []
    seen: Dict[str, int] = {}
    for index, rule in enumerate(settings.restricted_api):
        where = f"{settings.source or 'settings'}: restricted_api[{index}]"
        if "_" in rule.header:
            raise ConfigError(f"{where}.header: waitress drops header names with '_': use '-' ({rule.header!r})")
        for group in rule.groups:
            if group in seen:
                raise ConfigError(f"{where}.groups: {group!r} is already restricted by restricted_api[{seen[group]}]")
            seen[group] = index
        rules.append(Restriction(frozenset(rule.groups), rule.header, _read_secret(settings, rule, where)))
    return tuple(rules)


def _read_secret(settings: RuntimeSettings, rule: RestrictedApi, where: str) -> bytes:
    if rule.value_env is not None:
        value = os.environ.get(rule.value_env)
        if value is None:
            raise ConfigError(f"{where}.value_env: the environment variable {rule.value_env} is not set")
        secret = value.strip()
    else:
        secret = _read_secret_file(settings, str(rule.value_file), where)
    if not secret:
        raise ConfigError(f"{where}: the secret is empty")
    return secret.encode("utf-8")


def _read_secret_file(settings: RuntimeSettings, name: str, where: str) -> str:
    path = settings.resolve(name)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would hang the start
            raise ConfigError(f"{where}.value_file: {path}: not a regular file")
        with open(path, encoding="utf-8") as handle:
            first_line = handle.readline()
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}.value_file: {path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}.value_file: {path}: cannot read it ({type(exc).__name__})") from exc
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s.value_file: %s is readable or writable by other users: chmod o-rw it", where, path)
    return first_line.strip()


def check_remote_binding(settings: RuntimeSettings, host: str) -> None:
    """Refuse to serve beyond loopback unless the repository and shared-memory groups are restricted."""
    if _is_loopback(host) or settings.allow_unrestricted_remote:
        return
    restricted = {group for rule in settings.restricted_api for group in rule.groups}
    needed = [g for g in REMOTE_REQUIRED_GROUPS
              if g not in restricted and not (g == "shared-memory" and not settings.shared_memory.enabled)]
    if needed:
        raise ConfigError(
            f"refusing to serve on {host!r} (not loopback) with the {' and '.join(needed)} API unrestricted: "
            "add them to restricted_api, or set allow_unrestricted_remote: true"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere


class RestrictedApiMiddleware:
    """WSGI middleware: a request to a restricted group needs its header, else Triton's 403."""

    def __init__(self, app: WsgiApp, restrictions: Iterable[Restriction]) -> None:
        self._app = app
        self._by_group: Dict[str, Tuple[str, bytes, str]] = {}
        for rule in restrictions:
            message = f"This API is restricted, expecting header '{rule.header}'"
            for group in rule.groups:
                self._by_group[group] = (rule.environ_key, rule.secret, message)

    def __call__(self, environ: dict, start_response: StartResponse) -> Sequence[bytes]:
        group = api_group(environ.get("PATH_INFO", ""))
        rule = self._by_group.get(group) if group is not None else None
        if rule is not None and not _matches(environ.get(rule[0]), rule[1]):
            return json_refusal(start_response, 403, rule[2])
        return self._app(environ, start_response)


def _matches(given: Optional[str], secret: bytes) -> bool:
    if given is None:
        return False
    try:
        raw = given.encode("latin-1")  # WSGI header values are the request's bytes read as latin-1
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, secret)
