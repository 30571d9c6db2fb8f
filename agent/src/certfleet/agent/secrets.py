"""The agent's local secrets: values that targets refer to by name.

A target on the coordinator says ``password_secret: "keystore-prod"``; the value lives
only here, in ``secrets.json`` in the agent's directory, a JSON object of names to
strings. The file must belong to the agent's user and grant no access to group or
others, or the agent refuses to read it: a secret file anyone can read is not a secret.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

__all__ = ["SecretError", "Secrets"]

MAX_BYTES = 1 << 20


class SecretError(Exception):
    pass


class Secrets:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise SecretError(f"no secret file {self.path}: create it (mode 0600) with the secrets targets name")\
                from None
        except OSError as exc:
            raise SecretError(f"cannot open {self.path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_mode & 0o077:
                raise SecretError(f"{self.path} is readable by group or others"
                                  f" (mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it")
            if info.st_uid != os.geteuid():
                raise SecretError(f"{self.path} does not belong to the agent's user")
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise SecretError(f"{self.path} is larger than {MAX_BYTES} bytes")
        try:
            values = json.loads(data)
        except ValueError as exc:
            raise SecretError(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise SecretError(f"{self.path} must be a JSON object of names to strings")
        return values

    def get(self, name: str) -> str:
        values = self._load()
        if name not in values:
            raise SecretError(f"the agent has no secret named {name!r} in {self.path}")
        return values[name]

    def values_named(self, prefix: str) -> list[str]:
        """Every secret whose name starts with ``prefix``; none if there is no secret
        file (an agent without one simply has no such secrets)."""
        if not self.path.exists():
            return []
        return [value for name, value in sorted(self._load().items()) if name.startswith(prefix)]
