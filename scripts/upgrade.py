"""``mlops upgrade plan``: what an upgrade to the pinned versions would change, before it runs.

For the environment in an env file (a stack's, through ``mlops env --stack S --via-tunnel`` and
``mlops tunnel``, or the twin's), side by side:

- **current** versions of MLflow and Prefect: what the running servers report (MLflow's
  ``/version``, Prefect's ``/api/admin/version``). The servers, not the stack's outputs or
  its bucket, because they are what actually runs (a host may still be booting the new lock),
  and because reading them needs neither the Pulumi CLI nor AWS credentials (tests use a
  fake server);
- **target** versions: the host lock (``infra/hostboot/host-lock.txt``), which is what
  ``pulumi up`` installs on the hosts;
- **schema revisions**: the alembic heads the target packages ship (read from their migration
  scripts in this virtualenv, which ``make venv`` installs from the same pins), against the
  revision each database is at when it is reachable from here (``--twin``: the twin's
  databases; a stack's database is in private subnets: its revisions are in the migration
  steps' journal, ``journalctl -u mlflow-migrate -u prefect-migrate``).

A database at a revision the target does not know (a newer schema: a downgrade) is flagged:
the migration step would fail, and the server would not start.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.common import REPO_ROOT, OpsError
from scripts.envfile import read_env_file

HOST_LOCK = REPO_ROOT / "infra" / "hostboot" / "host-lock.txt"
MIGRATE_SCRIPT = REPO_ROOT / "infra" / "hostboot" / "migrate.py"
PACKAGES = ("mlflow", "prefect")
# The three databases, by the names migrate.py uses, and the package shipping each schema.
DATABASES = {"mlflow": "mlflow", "mlflow_auth": "mlflow", "prefect": "prefect"}
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", re.MULTILINE)
_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, kw_only=True)
class Shipped:
    """What one package version migrates a database to."""

    version: str
    head: str
    revisions: frozenset[str]  # every revision its migration scripts know


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Current and target versions, and each database's revision against the target head."""

    current: dict[str, str]  # package -> version the server reports (or why unknown)
    target: dict[str, str]  # package -> version the host lock pins
    shipped: dict[str, Shipped]  # database -> the target's head
    revisions: dict[str, str | None]  # database -> revision now (absent: not reachable)

    def database_verdict(self, database: str) -> str:
        """What the migration step will do to ``database``."""
        if database not in self.revisions:
            return "not reachable from here (see the migration step's journal)"
        current, target = self.revisions[database], self.shipped[database]
        if current is None:
            return "new database: created at the head"
        if current == target.head:
            return "up to date"
        if current not in target.revisions:
            return "UNKNOWN to the target (a newer schema?): the migration would fail"
        return "will be migrated"

    @property
    def blocked(self) -> list[str]:
        """Databases the target cannot migrate."""
        return [d for d in self.shipped if self.database_verdict(d).startswith("UNKNOWN")]


def pinned_versions(lock: Path = HOST_LOCK) -> dict[str, str]:
    """MLflow's and Prefect's versions in the host lock."""
    pins = {name.lower(): version for name, version in _PIN.findall(lock.read_text())}
    missing = [package for package in PACKAGES if package not in pins]
    if missing:
        raise OpsError(f"{lock} pins no {', '.join(missing)}")
    return {package: pins[package] for package in PACKAGES}


def shipped_heads(python: str = sys.executable) -> dict[str, Shipped]:
    """Each database's head in the packages installed for ``python`` (migrate.py heads)."""
    result = subprocess.run(
        [python, str(MIGRATE_SCRIPT), "heads", "--revisions"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode:
        raise OpsError(f"reading the migration heads with {python} failed: {result.stderr.strip()}")
    found = json.loads(result.stdout)
    return {
        database: Shipped(
            version=entry["version"],
            head=entry["head"],
            revisions=frozenset(entry.get("revisions", ())),
        )
        for database, entry in found.items()
    }


def running_versions(env: dict[str, str], client: httpx.Client | None = None) -> dict[str, str]:
    """The versions the servers report; ``unreachable (...)`` where a server does not answer."""
    http = client or httpx.Client(timeout=_TIMEOUT_SECONDS)
    mlflow_user = env.get("MLFLOW_TRACKING_USERNAME", "")
    mlflow_password = env.get("MLFLOW_TRACKING_PASSWORD", "")
    requests = {
        "mlflow": (
            env["MLFLOW_TRACKING_URI"].rstrip("/") + "/version",
            basic_header(f"{mlflow_user}:{mlflow_password}"),
        ),
        "prefect": (
            env["PREFECT_API_URL"].rstrip("/") + "/admin/version",
            # Prefect compares the whole basic credential with its auth string.
            basic_header(env.get("PREFECT_API_AUTH_STRING", "")),
        ),
    }
    versions = {}
    with http:
        for package, (url, headers) in requests.items():
            try:
                response = http.get(url, headers=headers)
                response.raise_for_status()
                versions[package] = response.text.strip().strip('"')
            except httpx.HTTPError as exc:
                versions[package] = f"unreachable ({type(exc).__name__}: {url})"
    return versions


def basic_header(credentials: str) -> dict[str, str]:
    """An HTTP basic ``Authorization`` header carrying ``credentials``."""
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def twin_revisions(state_dir: Path) -> dict[str, str | None]:
    """The revision each of the process twin's databases is at (its env files name them)."""
    from scripts.twin.lifecycle import load

    twin = load(state_dir)
    specs = twin.specs()
    mlflow = read_env_file(Path(specs["mlflow"].env_file))
    auth_ini = Path(specs["mlflow"].environment["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    match = re.search(r"^database_uri = (\S+)$", auth_ini, re.MULTILINE)
    if match is None:
        raise OpsError("the twin's MLflow auth config names no database_uri")
    prefect = read_env_file(Path(specs["prefect-server"].env_file))
    urls = {
        "mlflow": mlflow["MLFLOW_BACKEND_STORE_URI"],
        "mlflow_auth": match.group(1),
        "prefect": prefect["PREFECT_SERVER_DATABASE_CONNECTION_URL"],
    }
    return {database: database_revision(database, url) for database, url in urls.items()}


def database_revision(database: str, url: str) -> str | None:
    """The alembic revision of ``database`` at SQLAlchemy ``url`` (None: a new database)."""
    import psycopg

    table = "alembic_version_auth" if database == "mlflow_auth" else "alembic_version"
    conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if not exists or not exists[0]:
                return None
            rows = conn.execute(f"SELECT version_num FROM {table}").fetchall()  # noqa: S608
    except psycopg.Error as exc:
        raise OpsError(f"the twin's {database} database did not answer: {exc}") from exc
    return ",".join(sorted(str(row[0]) for row in rows)) or None


def plan(
    env: dict[str, str],
    *,
    twin_state_dir: Path | None = None,
    client: httpx.Client | None = None,
    python: str = sys.executable,
    lock: Path = HOST_LOCK,
) -> Plan:
    """The upgrade plan for the environment ``env`` names."""
    target = pinned_versions(lock)
    shipped = shipped_heads(python)
    installed = {DATABASES[d]: s.version for d, s in shipped.items()}
    differing = [
        f"{package} {installed[package]} (lock: {target[package]})"
        for package in PACKAGES
        if installed[package] != target[package]
    ]
    if differing:
        raise OpsError(
            f"this virtualenv has {', '.join(differing)}: its migration heads are not the "
            "target's; install the locked versions (`make venv`) and plan again"
        )
    return Plan(
        current=running_versions(env, client),
        target=target,
        shipped=shipped,
        revisions=twin_revisions(twin_state_dir) if twin_state_dir else {},
    )


def report(result: Plan) -> list[str]:
    """The plan as the command prints it."""
    lines = [f"{'package':<12}{'current (running)':<40}target (host lock)"]
    for package in PACKAGES:
        current, target = result.current[package], result.target[package]
        change = "" if current == target else ("  <- upgrade" if current[0].isdigit() else "")
        lines.append(f"{package:<12}{current:<40}{target}{change}")
    lines.append("")
    lines.append(f"{'database':<12}{'revision now':<16}{'target head':<16}what the migration does")
    for database, shipped in result.shipped.items():
        now = result.revisions.get(database, "?") if database in result.revisions else "?"
        lines.append(
            f"{database:<12}{now or '(none)':<16}{shipped.head:<16}"
            f"{result.database_verdict(database)}"
        )
    return lines
