"""The hosts twin's network: one namespace per host at its stack address, a bridge, nftables.

Every object is named with the ``mlt-`` prefix so that ``mlops twin down`` finds what a
crashed ``up`` left behind. Only addresses inside the namespaces made here are used: the
bridge lives in a namespace of its own (``mlt-net``), never in the machine's.

The security groups are enforced the way AWS enforces them, statefully at each interface:
each namespace gets an nftables table whose input chain drops everything but replies and
what the stack's ingress rules admit (:class:`Ingress`, derived from ``infra/firewall.py``).
"""

from __future__ import annotations

import ctypes
import ipaddress
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from scripts.common import OpsError

PREFIX = "mlt-"
BRIDGE_NAMESPACE = f"{PREFIX}net"
BRIDGE = f"{PREFIX}br0"
NFT_TABLE = "mlt_sg"  # nft table names take no '-'
IMDS_ADDRESS = "169.254.169.254"
T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, kw_only=True)
class Node:
    """One namespace on the bridge: a host, the database or the AWS stand-ins."""

    name: str  # short name; the namespace is mlt-<name>
    address: str
    group: str  # the security group its interface is in ("" for the stand-ins)

    @property
    def namespace(self) -> str:
        """The network namespace's name."""
        return f"{PREFIX}{self.name}"


@dataclass(frozen=True, kw_only=True)
class Ingress:
    """One security-group ingress rule: TCP ``port`` into ``group`` from ``peer`` group."""

    group: str
    port: int
    peer: str
    last_port: int | None = None  # a range from ``port`` to this; None: ``port`` alone

    @property
    def ports(self) -> str:
        """nft's port expression: ``8786`` or ``8790-8809``."""
        if self.last_port is None or self.last_port == self.port:
            return str(self.port)
        return f"{self.port}-{self.last_port}"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a network command; a failure is an OpsError naming the command and its error."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode:
        raise OpsError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result


def namespaces() -> list[str]:
    """The twin's network namespaces that exist now."""
    listed = run("ip", "netns", "list").stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def create_bridge() -> None:
    """The bridge's namespace and the bridge itself (no address: it only switches)."""
    run("ip", "netns", "add", BRIDGE_NAMESPACE)
    run("ip", "-n", BRIDGE_NAMESPACE, "link", "set", "lo", "up")
    run("ip", "-n", BRIDGE_NAMESPACE, "link", "add", BRIDGE, "type", "bridge")
    run("ip", "-n", BRIDGE_NAMESPACE, "link", "set", BRIDGE, "up")


def attach(node: Node, network: ipaddress.IPv4Network) -> None:
    """``node``'s namespace, a veth pair from it to the bridge, its address, IMDS's address."""
    ns = node.namespace
    outside = f"{PREFIX}{node.name}"[:15]  # interface names are limited to 15 characters
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run(
        "ip",
        "-n",
        BRIDGE_NAMESPACE,
        "link",
        "add",
        outside,
        "type",
        "veth",
        "peer",
        "eth0",
        "netns",
        ns,
    )
    run("ip", "-n", BRIDGE_NAMESPACE, "link", "set", outside, "master", BRIDGE, "up")
    run("ip", "-n", ns, "addr", "add", f"{node.address}/{network.prefixlen}", "dev", "eth0")
    run("ip", "-n", ns, "link", "set", "eth0", "up")
    # Each host reaches its own instance metadata service on a link-local address.
    run("ip", "-n", ns, "addr", "add", f"{IMDS_ADDRESS}/32", "dev", "lo")


def ingress_ruleset(node: Node, nodes: Sequence[Node], rules: Iterable[Ingress]) -> str:
    """The nft script for ``node``: input dropped but replies, loopback and admitted ports."""
    lines = [
        f"table inet {NFT_TABLE} {{",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    ct state established,related accept",
        '    iifname "lo" accept',
    ]
    for rule in rules:
        if rule.group != node.group:
            continue
        peers = sorted(other.address for other in nodes if other.group == rule.peer)
        if peers:
            lines.append(f"    ip saddr {{ {', '.join(peers)} }} tcp dport {rule.ports} accept")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def enforce(node: Node, script: str) -> None:
    """Load ``script`` (from :func:`ingress_ruleset`) into ``node``'s namespace."""
    result = subprocess.run(
        ["ip", "netns", "exec", node.namespace, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise OpsError(f"nft refused the rules of {node.namespace}: {result.stderr.strip()}")


def remove_all() -> list[str]:
    """Delete every ``mlt-`` namespace (their veths and nft tables go with them)."""
    removed = []
    for ns in namespaces():
        run("ip", "netns", "delete", ns, check=False)
        removed.append(ns)
    return removed


@contextmanager
def entered(namespace: str) -> Iterator[None]:
    """The calling thread in ``namespace`` for the block, back in its own afterwards: what it
    starts there (a subprocess, a thread) stays there."""
    with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{namespace}") as target:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OpsError(f"cannot enter {namespace}: errno {ctypes.get_errno()}")
        try:
            yield
        finally:
            if _libc.setns(own.fileno(), _CLONE_NEWNET) != 0:
                raise OpsError(f"cannot leave {namespace}: errno {ctypes.get_errno()}")


def inside(namespace: str, call: Callable[[], T]) -> T:
    """``call()`` run with its sockets in ``namespace`` (a thread of its own enters it).

    ``setns`` on a network namespace moves only the calling thread, so the rest of this
    process stays where it was.
    """
    outcome: dict[str, Any] = {}

    def enter_and_call() -> None:
        try:
            with open(f"/run/netns/{namespace}") as handle:
                if _libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise OpsError(f"cannot enter {namespace}: errno {ctypes.get_errno()}")
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=enter_and_call, name=f"in-{namespace}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])
