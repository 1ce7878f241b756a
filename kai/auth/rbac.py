"""The role matrix: the one place that says who may do what."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    USER = "user"
    DEVELOPER = "developer"
    AGENT = "agent"
    ADMIN = "admin"


# Exactly the seed's SecurityManager.createPermissionMatrix; an absent entry is a denial.
MATRIX: Final[dict[Role, dict[str, bool]]] = {
    Role.USER: {
        "agents:read": True,
        "agents:create": True,
        "agents:update": True,
        "agents:delete": False,
        "agents:command": True,
        "files:upload": True,
        "config:read": True,
        "config:update": False,
    },
    Role.DEVELOPER: {
        "agents:read": True,
        "agents:create": True,
        "agents:update": True,
        "agents:delete": True,
        "agents:command": True,
        "files:upload": True,
        "config:read": True,
        "config:update": True,
        "services:read": True,
        "services:restart": True,
    },
    Role.AGENT: {
        "agents:read": False,
        "agents:create": False,
        "agents:update": False,
        "agents:delete": False,
        "agents:command": False,
        "files:upload": True,
        "config:read": False,
        "config:update": False,
    },
    Role.ADMIN: {
        "agents:read": True,
        "agents:create": True,
        "agents:update": True,
        "agents:delete": True,
        "agents:command": True,
        "files:upload": True,
        "config:read": True,
        "config:update": True,
        "services:read": True,
        "services:restart": True,
        "services:stop": True,
        "system:admin": True,
    },
}

PERMISSIONS: Final[frozenset[str]] = frozenset(p for row in MATRIX.values() for p in row)


def allowed(role: str, permission: str) -> bool:
    """Whether ``role`` holds ``permission``; unknown roles and permissions hold nothing."""
    try:
        return MATRIX[Role(role)].get(permission, False)
    except ValueError:
        return False


def permissions_of(role: str) -> list[str]:
    """The permissions granted to ``role``, sorted."""
    try:
        row = MATRIX[Role(role)]
    except ValueError:
        return []
    return sorted(p for p, granted in row.items() if granted)
