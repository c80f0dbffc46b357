"""The env file: the architecture's environment variables, one ``KEY=value`` per line.

Written by ``mlops env`` (from a stack's outputs) and by the local twin (for its loopback
services); read by the smoke test, deploy and run commands, and sourceable by a shell
(``set -a; . ./mlops.env; set +a``). Values are single-quoted for the shell when needed.
Files are created with mode 0600 because they hold credentials.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")


def format_env(values: Mapping[str, str]) -> str:
    """Render ``values`` as env-file text, keys in the given order."""
    lines = []
    for key, value in values.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"env file key {key!r} is not an upper-case shell variable name")
        if "\n" in value:
            raise ValueError(f"env file value for {key} contains a newline")
        lines.append(f"{key}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``values`` to ``path`` atomically with mode 0600 (never world- or group-readable)."""
    write_private(path, format_env(values))


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600: readers see the old file or the
    whole new one, and no one but the owner ever sees either."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a stale temp file keeps its mode through O_CREAT
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def parse_env(text: str, *, source: str = "env file") -> dict[str, str]:
    """Parse env-file text written by :func:`format_env` (comments and blank lines allowed)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise ValueError(f"{source}, line {number}: expected KEY=value, got {raw!r}")
        words = shlex.split(rest) if rest else [""]
        if len(words) != 1:
            raise ValueError(f"{source}, line {number}: value of {key} is not one shell word")
        values[key] = words[0]
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """Read an env file; a missing file is a clear error naming the path."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"env file {path} does not exist: write it with `mlops env --stack STACK` "
            "or `mlops twin up`"
        ) from None
    return parse_env(text, source=str(path))
