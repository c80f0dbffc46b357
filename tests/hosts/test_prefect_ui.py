"""The real Prefect server, run from its rendered spec with its virtualenv read-only (as on
the control host, where root owns the virtualenv and the server runs as ``prefect``), serves
its UI (SECURITY_INVARIANTS.md 51, issue 9 defect 1).

The server runs in a private mount namespace where site-packages is bind-mounted read-only:
even root cannot write there, as ``prefect`` cannot on a host. (Running it as an unprivileged
user is not possible on this machine: the virtualenv's interpreter lives under /root.) The
database is a SQLite file in the service's home; everything else is the rendered unit's.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from pipeline.ports import free_port
from tests.hosts.control_services import (
    answers,
    local_plan,
    run_steps,
    running,
    service_environment,
    write_secret_files,
)

SITE_PACKAGES = Path(httpx.__file__).resolve().parent.parent
# Mount site-packages read-only over itself, in a mount namespace of the server's own.
READ_ONLY_VENV = (
    "unshare",
    "--mount",
    "--propagation=private",
    "sh",
    "-c",
    'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"',
    str(SITE_PACKAGES),
)


def test_invariant_51_prefect_ui_served_with_a_read_only_virtualenv(tmp_path: Path) -> None:
    port = free_port()
    plan = local_plan(tmp_path, prefect_port=port)
    spec = next(s for s in plan.services if s.name == "prefect-server")
    home = Path(spec.working_directory)
    database = f"sqlite+aiosqlite:///{home}/prefect.db"
    key = "PREFECT_SERVER_DATABASE_CONNECTION_URL="
    write_secret_files(plan, {key: key + database})
    env = service_environment(spec)
    home.mkdir(parents=True)  # StateDirectory=: systemd creates it for the service user
    # The server never migrates itself (invariant 72): its unit requires prefect-migrate.
    assert "migrated from (none) to" in run_steps(plan, "prefect-server", home)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "prefect.log"
    with running(
        spec.argv,
        env,
        home,
        lambda: answers(f"{url}/api/health"),
        log=log,
        preexec=READ_ONLY_VENV,
        seconds=300,  # a loaded 2-core machine needs minutes; alone, about 20 s
    ):
        page = httpx.get(url + "/", headers={"Accept": "text/html"}, follow_redirects=True)
    assert page.status_code == 200, (page.status_code, log.read_text()[-2000:])
    assert "<html" in page.text.lower()
    assert "will not be available" not in log.read_text()
    ui = Path(env["PREFECT_UI_STATIC_DIRECTORY"])
    assert ui.is_relative_to(home), "the UI build must be copied into the unit's state directory"
    assert list(ui.glob("*/index.html")), f"no UI build copied into {ui}"
