"""What every ``mlops`` command shares: the expected-error type, the repository root,
the ``--env-file`` option and the external tools the commands shell out to.

A command signals an expected failure (bad input, a missing tool, a failed check) by raising
:class:`OpsError`; ``scripts.cli.main`` prints its message on stderr and exits with status 1,
without a traceback. Anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from scripts.envfile import read_env_file

REPO_ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "mlops-platform"  # the Pulumi project: its config keys and stack tags are prefixed so
DEFAULT_ENV_FILE = Path("mlops.env")

EnvFileOption = Annotated[
    Path,
    typer.Option(
        "--env-file",
        help="Env file with the environment's variables (from `mlops env` or `mlops twin up`).",
        dir_okay=False,
    ),
]

# Pulumi's stack names: alphanumerics, hyphens, underscores and periods, optionally
# qualified as org/stack or org/project/stack. A leading letter or digit also keeps a
# name from being read as a command-line flag by the tools it is passed to.
_STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}){0,2}")

_INSTALL_HINTS = {
    "pulumi": "install the Pulumi CLI: https://www.pulumi.com/docs/iac/download-install/",
    "aws": "install the AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html",
    "session-manager-plugin": (
        "install the Session Manager plugin for the AWS CLI: "
        "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
    ),
}


class OpsError(Exception):
    """An expected failure of an ``mlops`` command: one line on stderr, exit status 1."""


def load_env(path: Path, required: tuple[str, ...]) -> dict[str, str]:
    """Read the env file at ``path``; a missing file or missing ``required`` keys is an OpsError."""
    try:
        values = read_env_file(path)
    except (FileNotFoundError, ValueError) as exc:
        raise OpsError(str(exc)) from None
    missing = [key for key in required if not values.get(key)]
    if missing:
        raise OpsError(f"env file {path} lacks {', '.join(missing)}")
    return values


def check_stack_name(name: str) -> str:
    """Return ``name`` if it is a valid Pulumi stack name, else raise an OpsError naming it."""
    if not _STACK_NAME.fullmatch(name):
        raise OpsError(
            f"stack name {name!r} is not valid: use letters, digits, '-', '_' and '.', "
            "optionally qualified as org/stack"
        )
    return name


def require_tool(name: str) -> str:
    """The path of executable ``name`` on PATH, or an OpsError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise OpsError(f"`{name}` is not on PATH: {_INSTALL_HINTS[name]}")
    return path


def pulumi(*args: str, capture: bool = True) -> str:
    """Run ``pulumi ARGS`` in the repository root and return its standard output.

    With ``capture`` false the output goes straight to the terminal (long operations such as
    ``up`` and ``destroy``) and the empty string is returned. A non-zero exit is an OpsError
    carrying pulumi's standard error, never its standard output (which may hold secrets).
    """
    command = [require_tool("pulumi"), *args]
    shown = " ".join(["pulumi", *args])
    if not capture:
        code = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
        if code:
            raise OpsError(f"`{shown}` failed with exit status {code}")
        return ""
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode:
        detail = result.stderr.strip() or "no error output"
        raise OpsError(f"`{shown}` failed with exit status {result.returncode}: {detail}")
    return result.stdout


def stack_outputs(stack: str, *, show_secrets: bool = False) -> dict[str, object]:
    """The outputs of ``stack`` as JSON values (secret ones in plain text only if asked)."""
    args = ["stack", "output", "--json"]
    if show_secrets:
        args.append("--show-secrets")
    text = pulumi(*args, "--stack", check_stack_name(stack))
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError:
        outputs = None
    if not isinstance(outputs, dict):
        raise OpsError(
            f"`pulumi stack output --json` for stack {stack} did not print a JSON object"
        )
    return outputs


def string_outputs(
    stack: str, outputs: dict[str, object], names: tuple[str, ...]
) -> dict[str, str]:
    """The outputs ``names`` as strings; absent or empty ones are one OpsError naming them all."""
    missing = [
        name for name in names if not isinstance(outputs.get(name), str) or not outputs[name]
    ]
    if missing:
        raise OpsError(
            f"stack {stack} lacks the outputs {', '.join(missing)} "
            f"(has: {', '.join(sorted(outputs)) or 'none'}); "
            f"deploy it first with `pulumi up --stack {stack}`"
        )
    return {name: str(outputs[name]) for name in names}
