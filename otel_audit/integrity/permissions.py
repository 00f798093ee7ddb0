"""Check that a WAL directory is private to its owner: directories 0700, files 0600, no foreign owner."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from otel_audit import config
from otel_audit.exceptions import ConfigError

_logger = logging.getLogger("otel_audit")

ENV_WAL_PERMISSIONS: Final = config.OTEL_AUDIT_WAL_PERMISSIONS
"""`warn` (log once at open), `refuse` (raise ConfigError) or `ignore`. Default: `warn`."""

WARN: Final = "warn"
REFUSE: Final = "refuse"
IGNORE: Final = "ignore"
POLICIES: Final = (WARN, REFUSE, IGNORE)

_MAX_LISTED: Final = 5


@dataclass(frozen=True, slots=True)
class PermissionProblem:
    """One path that others could read or change; `reason` says how."""

    path: Path
    mode: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({stat.filemode(self.mode)}): {self.reason}"


def find_permission_problems(directory: str | os.PathLike[str]) -> list[PermissionProblem]:
    """Every path at or under `directory` that group or others can access, or that we do not own.

    Symbolic links are reported, not followed: a link in a WAL lets whoever controls its target
    read or replace audit data. A missing directory has no problems (the WAL creates it 0700).
    """
    root = Path(directory)
    uid = os.geteuid()
    problems: list[PermissionProblem] = []

    def check(path: Path) -> bool:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return False  # deleted meanwhile (an acked segment)
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            problems.append(PermissionProblem(path, mode, "a symbolic link; the WAL holds plain files only"))
            return False
        loose = mode & (stat.S_IRWXG | stat.S_IRWXO)
        if loose:
            what = (
                "group"
                if not mode & stat.S_IRWXO
                else "others"
                if not mode & stat.S_IRWXG
                else "group and others"
            )
            access = (
                "write"
                if loose & (stat.S_IWGRP | stat.S_IWOTH)
                else "read"
                if loose & (stat.S_IRGRP | stat.S_IROTH)
                else "enter"
            )
            problems.append(PermissionProblem(path, mode, f"{what} can {access} it"))
        if info.st_uid != uid:
            problems.append(
                PermissionProblem(path, mode, f"owned by uid {info.st_uid}, not by this process (uid {uid})")
            )
        return stat.S_ISDIR(mode)

    if not check(root):
        return problems
    for current, dirs, files in os.walk(root, followlinks=False):
        base = Path(current)
        dirs[:] = [d for d in dirs if check(base / d)]
        for name in files:
            check(base / name)
    return problems


def check_wal_permissions(
    directory: str | os.PathLike[str], policy: str | None = None, *, environ: Mapping[str, str] | None = None
) -> list[PermissionProblem]:
    """Apply the permission policy to a WAL directory; call it when the WAL is opened.

    Args:
        policy: `warn`, `refuse` or `ignore`; None reads OTEL_AUDIT_WAL_PERMISSIONS (default `warn`).

    Returns:
        The problems found (empty with `ignore`).

    Raises:
        ConfigError: `refuse` and a problem was found, or the policy is unknown.
    """
    if policy is None:
        policy = (
            ((os.environ if environ is None else environ).get(ENV_WAL_PERMISSIONS) or WARN).strip().lower()
        )
    if policy not in POLICIES:
        raise ConfigError(f"{ENV_WAL_PERMISSIONS}={policy!r} is not one of {', '.join(POLICIES)}")
    if policy == IGNORE:
        return []
    problems = find_permission_problems(directory)
    if not problems:
        return problems
    listed = "; ".join(str(p) for p in problems[:_MAX_LISTED])
    more = f" and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    fix = f"run `chmod -R go-rwx {directory}` as its owner"
    if policy == REFUSE:
        raise ConfigError(
            f"WAL directory {directory} is not private: {listed}{more}; {fix}"
            f" (or set {ENV_WAL_PERMISSIONS}=warn)"
        )
    _logger.warning("WAL directory %s is not private: %s%s; %s", directory, listed, more, fix)
    return problems


__all__ = [
    "ENV_WAL_PERMISSIONS",
    "IGNORE",
    "POLICIES",
    "REFUSE",
    "WARN",
    "PermissionProblem",
    "check_wal_permissions",
    "find_permission_problems",
]
