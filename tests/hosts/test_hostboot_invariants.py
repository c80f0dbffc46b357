"""The host-service invariants of SECURITY_INVARIANTS.md (20, 33, 34, 35), one test each,
asserted on the rendered unit files and env-file templates inside the user data."""

from __future__ import annotations

import re
import shlex

from hostboot.units import BOOTSTRAP_UNIT

from tests.hosts.rendered_hosts import (
    CONTROL_IP,
    Rendered,
    env_file_keys,
    parse_unit,
    unit_environment,
)

SECRET_PLACEHOLDER = re.compile(r"\$\{[a-z_]+\}")


def service(host: Rendered, name: str) -> dict[str, list[str]]:
    """The [Service] section of unit ``name``."""
    return parse_unit(host.units()[name])["Service"]


def exec_start(host: Rendered, name: str) -> list[str]:
    """The ExecStart= command line of unit ``name``, as words."""
    (line,) = service(host, name)["ExecStart"]
    return shlex.split(line)


def option(argv: list[str], flag: str) -> str:
    """The value following ``flag`` in ``argv``."""
    assert argv.count(flag) == 1, f"{flag} given {argv.count(flag)} times in {argv}"
    return argv[argv.index(flag) + 1]


def env_file(host: Rendered, name: str) -> dict[str, str]:
    """The env file (template) unit ``name`` reads, which must be root-only."""
    (path,) = service(host, name)["EnvironmentFile"]
    (spec,) = [f for f in host.boot_config()["files"] if f["path"] == path]
    assert spec["mode"] == "0600", f"{path} must be root-only"
    assert spec["group"] is None, f"{path} must be root-only"
    return env_file_keys(spec["template"])


def test_invariant_33_mlflow_basic_auth_allowed_hosts_proxied_artifacts_sized(
    control: Rendered,
) -> None:
    argv = exec_start(control, "mlflow.service")
    assert argv[:2] == ["/opt/mlops/venv/bin/mlflow", "server"]
    assert option(argv, "--app-name") == "basic-auth"
    # The default uvicorn server, nothing that switches it or disables the middleware.
    forbidden = {"--gunicorn-opts", "--waitress-opts", "--disable-security-middleware", "--dev"}
    assert not forbidden & set(argv)
    allowed_hosts = option(argv, "--allowed-hosts").split(",")
    assert allowed_hosts == [f"{CONTROL_IP}:5000", "localhost:*"]
    assert "*" not in allowed_hosts
    assert option(argv, "--artifacts-destination") == "s3://mlops-dev-artifacts-3f9a1c/mlflow"
    assert "--no-serve-artifacts" not in argv
    assert option(argv, "--workers") == "1"  # t3.medium
    environment = unit_environment(parse_unit(control.units()["mlflow.service"]))
    assert environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    secrets = env_file(control, "mlflow.service")
    assert secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "${mlflow_flask_secret_key}"
    assert secrets["MLFLOW_AUTH_ADMIN_PASSWORD"] == "${mlflow_admin_password}"
    assert control.boot_config()["min_secret_length"] >= 12
    tls = "sslmode=verify-full&sslrootcert=/etc/mlops/rds-ca-bundle.pem"  # invariant 50
    assert secrets["MLFLOW_BACKEND_STORE_URI"].endswith(f"/mlflow?{tls}")
    auth_ini = control.secret_file_templates()[environment["MLFLOW_AUTH_CONFIG_PATH"]]
    assert f"/mlflow_auth?{tls}\n" in auth_ini


def test_invariant_77_mlflow_trusts_a_checked_password_for_a_minute_at_most(
    control: Rendered,
) -> None:
    environment = unit_environment(parse_unit(control.units()["mlflow.service"]))
    auth_ini = control.secret_file_templates()[environment["MLFLOW_AUTH_CONFIG_PATH"]]
    (ttl,) = [line for line in auth_ini.splitlines() if line.startswith("auth_cache_ttl_seconds")]
    assert 0 < int(ttl.partition("=")[2]) <= 60


def test_invariant_34_prefect_server_auth_csrf_cors_and_worker_auth(
    control: Rendered, worker: Rendered
) -> None:
    server = unit_environment(parse_unit(control.units()["prefect-server.service"]))
    server_secrets = env_file(control, "prefect-server.service")
    assert server_secrets["PREFECT_SERVER_API_AUTH_STRING"] == "${prefect_auth_string}"
    # TLS through Prefect's own settings (invariant 50), not a URL parameter.
    assert server_secrets["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith(":5432/prefect")
    assert server["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    origins = server["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"].split(",")
    assert origins
    assert "*" not in origins
    assert not {"PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_KEY"} & set(server)

    worker_env = unit_environment(parse_unit(worker.units()["prefect-worker.service"]))
    worker_secrets = env_file(worker, "prefect-worker.service")
    assert worker_secrets["PREFECT_API_AUTH_STRING"] == "${prefect_auth_string}"
    assert worker_env["PREFECT_API_URL"] == f"http://{CONTROL_IP}:4200/api"
    assert "PREFECT_API_KEY" not in worker_env | worker_secrets  # no Prefect Cloud key


def test_invariant_35_every_unit_restarts_waits_for_network_runs_as_its_user_and_stops(
    control: Rendered, worker: Rendered
) -> None:
    units = {**control.units(), **worker.units()}
    units.pop(BOOTSTRAP_UNIT)  # root's oneshot, not a service (invariant 58)
    for step in ("mlflow-migrate.service", "prefect-migrate.service"):
        units.pop(step)  # the servers' oneshot steps, not services (invariant 72)
    assert set(units) == {"mlflow.service", "prefect-server.service", "prefect-worker.service"}
    users = {user["name"] for host in (control, worker) for user in host.document["users"][1:]}
    for name, text in units.items():
        unit = parse_unit(text)
        assert unit["Service"]["Restart"] in (["on-failure"], ["always"]), name
        (restart_sec,) = unit["Service"]["RestartSec"]
        assert int(restart_sec) >= 1, name
        assert "network-online.target" in unit["Unit"]["After"][0].split(), name
        assert "network-online.target" in unit["Unit"]["Wants"][0].split(), name
        (user,) = unit["Service"]["User"]
        assert user != "root", name
        assert user in users, name
        # The stop: SIGKILL for whatever is left after the timeout, whatever the signals did.
        assert unit["Service"]["SendSIGKILL"] == ["yes"], name
        assert int(unit["Service"]["TimeoutStopSec"][0]) <= 60, name
    # The Prefect worker ignores its first SIGTERM: it gets a second one.
    stop = parse_unit(units["prefect-worker.service"])["Service"]
    (exec_stop,) = stop["ExecStop"]
    assert "/usr/bin/kill -s SIGTERM" in exec_stop  # and tolerates an exited process (63)
    assert stop["KillSignal"] == ["SIGTERM"]
    for user in control.document["users"][1:] + worker.document["users"][1:]:
        assert user["system"] is True
        assert user["shell"] == "/sbin/nologin"


def test_invariant_20_user_data_holds_no_secret(host: Rendered) -> None:
    # Every value the boot script writes from a secret is a ${placeholder}, and the boot
    # config names the secrets by ARN only.
    arn = re.compile(r"arn:aws:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+")
    for secret_arn in host.boot_config()["secrets"].values():
        assert arn.fullmatch(secret_arn)
    for path, template in host.secret_file_templates().items():
        for line in template.splitlines():
            if re.search(r"(?i)password|secret|auth_string|://[^:/]+:", line):
                assert SECRET_PLACEHOLDER.search(line), f"{path}: {line}"
    # Nothing that looks like a credential anywhere in the text.
    assert not re.search(r"AKIA[0-9A-Z]{16}", host.text)  # an access key id
    assert not re.search(r"(?i)aws_secret_access_key|PREFECT_API_KEY", host.text)
    assert not re.search(r"://[^:/@\s]+:(?!\$\{)[^@\s]+@", host.text)  # a password in a URL
    for text in host.units().values():
        for key in unit_environment(parse_unit(text)):
            assert not re.search(r"(?i)password|secret|auth_string", key), key
