"""The IMDS firewall (SECURITY_INVARIANTS.md 52): rendered into the control host's user data,
loaded before the Prefect server starts, and refusing exactly the service users it names.

``nft -c -f`` checks the rendered ruleset; then a real experiment in a network namespace of
the test's own: the metadata address on its loopback, a listener there, the ruleset loaded,
and a connection attempted as the blocked user and as another one. The users exist in a
bind-mounted passwd file inside a private mount namespace (nft resolves the names at load).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hostboot.services import IMDS_ADDRESSES, imds_ruleset

from tests.hosts.rendered_hosts import Rendered, parse_unit

BLOCKED_UID, OTHER_UID = 64510, 64511
PASSWD = "".join(
    f"{user}:x:{uid}:{uid}::/:/sbin/nologin\n"
    for user, uid in (("prefect", BLOCKED_UID), ("mlflow", OTHER_UID))
)

# Runs as root inside the namespaces: metadata address up, listener, then connections as each uid.
EXPERIMENT = """
import json, socket, subprocess, sys, threading
ruleset, imds, blocked, other = sys.argv[1:]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", f"{imds}/32", "dev", "lo"], check=True)
listener = socket.create_server((imds, 80))
def serve():
    while True:
        listener.accept()[0].close()
threading.Thread(target=serve, daemon=True).start()
probe = f"import socket; socket.create_connection(({imds!r}, 80), timeout=5)"
def connects(uid):
    user = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    argv = ["setpriv", *user, sys.executable, "-c", probe]
    return subprocess.run(argv, capture_output=True).returncode == 0
result = {"before": connects(blocked)}
subprocess.run(["nft", "-f", ruleset], check=True)
subprocess.run(["nft", "-f", ruleset], check=True)  # reloading replaces, never duplicates
table = ["nft", "list", "table", "inet", "mlops_imds"]
rules = subprocess.run(table, capture_output=True, text=True).stdout.count("reject")
result.update(blocked=connects(blocked), other=connects(other), rules=rules)
print(json.dumps(result))
"""


def in_namespaces(tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in new network and mount namespaces, with the test's passwd file."""
    passwd = tmp_path / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text() + PASSWD)
    script = 'mount --bind "$0" /etc/passwd && exec "$@"'
    return subprocess.run(
        [
            "unshare",
            "--net",
            "--mount",
            "--propagation=private",
            "sh",
            "-c",
            script,
            str(passwd),
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def rendered_ruleset(control: Rendered, tmp_path: Path) -> Path:
    (path,) = [p for p in control.files if p.endswith(".nft")]
    ruleset = tmp_path / "imds.nft"
    ruleset.write_text(control.files[path])
    return ruleset


def test_invariant_52_rendered_ruleset_passes_nft_check(control: Rendered, tmp_path: Path) -> None:
    ruleset = rendered_ruleset(control, tmp_path)
    checked = in_namespaces(tmp_path, "nft", "-c", "-f", str(ruleset))
    assert checked.returncode == 0, checked.stderr
    broken = tmp_path / "broken.nft"
    broken.write_text(ruleset.read_text().replace('"prefect"', '"no-such-user"'))
    assert in_namespaces(tmp_path, "nft", "-c", "-f", str(broken)).returncode != 0


def test_invariant_52_loaded_before_the_prefect_server_and_only_for_it(
    control: Rendered, worker: Rendered
) -> None:
    server = parse_unit(control.units()["prefect-server.service"])["Service"]
    (path,) = [p for p in control.files if p.endswith(".nft")]
    assert server["ExecStartPre"] == [f"+/usr/sbin/nft -f {path}"]  # as root, before the start
    assert "ExecStartPre" not in parse_unit(control.units()["mlflow.service"])["Service"]
    assert "nftables" in control.document["packages"]
    assert control.files[path] == imds_ruleset(("prefect",))
    # The artifact proxy (MLflow) and the worker's flow runs need the instance role.
    assert not [p for p in worker.files if p.endswith(".nft")]


@pytest.mark.parametrize("imds", IMDS_ADDRESSES[:1])
def test_invariant_52_blocked_user_cannot_reach_the_metadata_service(
    control: Rendered, tmp_path: Path, imds: str
) -> None:
    ruleset = rendered_ruleset(control, tmp_path)
    outcome = in_namespaces(
        tmp_path,
        sys.executable,
        "-c",
        EXPERIMENT,
        str(ruleset),
        imds,
        str(BLOCKED_UID),
        str(OTHER_UID),
    )
    assert outcome.returncode == 0, outcome.stderr
    result = json.loads(outcome.stdout)
    assert result["before"] is True, "the experiment cannot tell: the address is unreachable anyway"
    assert result["blocked"] is False
    assert result["other"] is True
    assert result["rules"] == 2
