"""The rendered hosts, booted under cloud-init and systemd in containers at their stack
addresses: they serve, run their services as the units say, and the operator uses them
like a stack (``mlops smoke``, ``deploy``, ``run``)."""

from __future__ import annotations

import socket
import time

import pytest

from scripts.twin import hostnet
from scripts.twin.hosts import DATABASE, POSTGRES_PORT
from tests.hoststwin.hoststwin_api import HostsHandle

pytestmark = pytest.mark.hosts
VENV = "/opt/mlops/venv"
SANDBOXING = {"NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectSystem": "full",
              "ProtectHome": "yes"}  # fmt: skip


def _connects(twin: HostsHandle, source: str, address: str, port: int) -> bool:
    """Whether a TCP connection from namespace ``source`` to ``address:port`` is accepted."""

    def attempt() -> bool:
        try:
            with socket.create_connection((address, port), timeout=3.0):
                return True
        except OSError:
            return False

    return hostnet.inside(f"{hostnet.PREFIX}{source}", attempt)


def test_every_host_boots_to_all_units_active(hosts_twin: HostsHandle) -> None:
    result = hosts_twin.operator("true")  # the operator's namespace exists
    assert result.returncode == 0
    for host in (node.name for node in hosts_twin.twin.hosts):
        states = hosts_twin.twin.units(host)
        assert states, host
        assert all(state == "active" for state in states.values()), (host, states)
    boot = hosts_twin.twin.state.boot_seconds
    print(f"twin up --hosts: {hosts_twin.up_seconds:.0f} s; boot to all units active: {boot}")
    for host in (node.name for node in hosts_twin.twin.hosts):
        memory = hosts_twin.twin.resident_memory(host)
        running = [
            unit
            for unit, props in hosts_twin.twin.unit_properties(host, "SubState").items()
            if props["SubState"] == "running"
        ]
        assert running, host
        assert all(memory.get(unit, 0) > 0 for unit in running), (host, memory)
        shown = ", ".join(f"{unit} {memory[unit]:.0f} MiB" for unit in running)
        print(f"{host}: resident memory, idle: {shown}")


def test_each_service_runs_as_its_user_from_the_root_owned_venv_sandboxed(
    hosts_twin: HostsHandle,
) -> None:
    twin = hosts_twin.twin
    for node in twin.hosts:
        owner = hosts_twin.on_host(node.name, "stat", "-c", "%U", f"{VENV}/bin/python")
        assert owner.stdout.strip() == "root", node.name
        for spec in twin.plan_services(node.name):
            unit = f"{spec.name}.service"
            shown = hosts_twin.on_host(
                node.name, "systemctl", "show", unit,
                "--property=Type,MainPID,User," + ",".join(SANDBOXING),
            )  # fmt: skip
            props = dict(line.split("=", 1) for line in shown.stdout.splitlines())
            assert props["User"] == spec.user, unit
            assert {key: props[key] for key in SANDBOXING} == SANDBOXING, unit
            if props["Type"] == "oneshot":
                continue  # a step that ran to completion (a migration) has no process left
            user = hosts_twin.on_host(node.name, "ps", "-o", "user=", "-p", props["MainPID"])
            assert user.stdout.strip() == spec.user, unit
            exe = hosts_twin.on_host(node.name, "readlink", f"/proc/{props['MainPID']}/exe")
            cmdline = hosts_twin.on_host(
                node.name, "cat", f"/proc/{props['MainPID']}/cmdline"
            ).stdout.split("\0")
            assert cmdline[0].startswith(VENV) or cmdline[1].startswith(VENV), (unit, exe.stdout)
            writes = hosts_twin.on_host(
                node.name, "runuser", "-u", spec.user, "--", "test", "-w", f"{VENV}/lib"
            )
            assert writes.returncode != 0, f"{spec.user} may write the venv"


def test_a_port_outside_the_security_groups_is_refused(hosts_twin: HostsHandle) -> None:
    """The database admits the control host only: from a worker its port is closed."""
    database = hosts_twin.twin.node(DATABASE).address
    assert _connects(hosts_twin, "control", database, POSTGRES_PORT)
    assert not _connects(hosts_twin, "worker-1", database, POSTGRES_PORT)
    assert not _connects(hosts_twin, "operator", database, POSTGRES_PORT)


def test_the_operator_smoke_test_passes_against_the_hosts(hosts_twin: HostsHandle) -> None:
    result = hosts_twin.mlops("smoke", "--wait", "120")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_run_completes_on_the_worker_after_it_reboots(deployed: HostsHandle) -> None:
    """The worker comes back from a reboot serving (its bootstrap already done), and the
    training flow runs on it against MLflow and Prefect on the control host."""
    started = time.monotonic()
    deployed.twin.reboot("worker-1")
    print(f"worker-1 reboot to all units active: {time.monotonic() - started:.0f} s")
    assert "already bootstrapped" in deployed.journal("worker-1", "mlops-bootstrap.service")

    deployed.training = training = deployed.train()
    print(f"trigger -> completed run on the worker container: {training.seconds:.0f} s")
    worker = deployed.journal("worker-1", "prefect-worker.service")
    name = deployed.twin.worker_settings(1).worker_name
    assert f"Worker '{name}' submitting flow run '{training.flow_run_id}'" in worker
