"""systemd unit files rendered from :class:`~hostboot.services.ServiceSpec`, and the bootstrap's.

Every service unit starts only once the host's bootstrap unit has succeeded (``Requires=`` and
``After=`` it) and so have its steps (the control host's schema migrations: oneshot units,
never restarted on their own, rerun when their service restarts); it restarts on failure after
a pause, runs as its dedicated non-root user with its own state directory, reads its secrets
from a root-only env file (systemd reads it before dropping privileges), and is stopped by its
spec's signals in turn, with SIGKILL for whatever remains after the stop timeout.

The bootstrap unit is a ``Type=oneshot`` that stays active once done; its script retries until
it succeeds (see templates/bootstrap.sh), and systemd restarts the script itself should it die.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hostboot.services import NFT, ServiceSpec

BOOTSTRAP_UNIT = "mlops-bootstrap.service"
# systemd restarts a bootstrap script that died (the script retries its own failures) this
# long after, with no limit on the number of restarts.
BOOTSTRAP_RESTART_SECONDS = 30

_NEEDS_QUOTES = re.compile(r"""[\s"'\\;]""")


def _escape_specifiers(text: str) -> str:
    """Escape systemd's ``%`` specifiers."""
    return text.replace("%", "%%")


def exec_word(word: str) -> str:
    """One command-line word as systemd's Exec*= lines read it back verbatim."""
    escaped = _escape_specifiers(word).replace("$", "$$")
    if word and not _NEEDS_QUOTES.search(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: tuple[str, ...]) -> str:
    """A full command line for ``ExecStart=``."""
    return " ".join(exec_word(word) for word in argv)


def environment_line(key: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted."""
    assignment = _escape_specifiers(f"{key}={value}").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{assignment}"'


def signal_main_process(signal: str) -> tuple[str, ...]:
    """A command sending ``signal`` to the main process, doing nothing when it already exited.

    systemd also runs ``ExecStop=`` after the main process exited on its own, with ``$MAINPID``
    unset: a bare ``kill -s SIG $MAINPID`` then fails with a usage error.
    """
    script = f'[ -z "$MAINPID" ] || exec /usr/bin/kill -s {signal} "$MAINPID"'
    return ("/bin/sh", "-c", script)


def stop_lines(spec: ServiceSpec) -> list[str]:
    """The stop: every signal but the last from ``ExecStop=``, the last as ``KillSignal=``."""
    *first, last = spec.stop_signals
    lines = [f"ExecStop={exec_line(signal_main_process(signal))}" for signal in first]
    lines += [
        f"KillSignal={last}",
        f"TimeoutStopSec={spec.stop_timeout_seconds}",
        "SendSIGKILL=yes",
    ]
    return lines


def start_lines(spec: ServiceSpec) -> list[str]:
    """The start: the IMDS firewall first (as root: ``+``), the post-start step, the timeout."""
    lines = []
    if spec.imds_firewall is not None:
        lines.append(f"ExecStartPre=+{NFT} -f {spec.imds_firewall}")
    lines += [f"ExecStartPre=+{exec_line(argv)}" for argv in spec.root_pre_start]
    lines.append(f"ExecStart={exec_line(spec.argv)}")
    if spec.post_start:
        lines.append(f"ExecStartPost={exec_line(spec.post_start)}")
    lines.append(f"TimeoutStartSec={spec.start_timeout_seconds}")
    return lines


def run_lines(spec: ServiceSpec) -> list[str]:
    """How the unit runs: a service restarts on failure and is stopped by its signals; a step
    (``prepares``) runs once to completion, stays active, and is never restarted on its own
    (a migration that failed half-way is not retried blindly): its service is not started."""
    if spec.prepares is not None:
        return [*start_lines(spec), "Restart=no"]
    return [
        *start_lines(spec),
        *stop_lines(spec),
        "Restart=on-failure",
        f"RestartSec={spec.restart_seconds}",
    ]


def render_unit(spec: ServiceSpec) -> str:
    """The ``<name>.service`` file for ``spec``."""
    lines = [
        "# Rendered by infra/hostboot; the local twin runs this same command line.",
        "[Unit]",
        f"Description={spec.description}",
        "Wants=network-online.target",
        f"Requires={BOOTSTRAP_UNIT}",
        f"After=network-online.target {BOOTSTRAP_UNIT}",
        *(f"Requires={unit}\nAfter={unit}" for unit in spec.requires),
        # A step is restarted (run again) whenever its service is stopped or restarted.
        *([f"PartOf={spec.prepares}.service"] if spec.prepares else []),
        "",
        "[Service]",
        *(["Type=oneshot", "RemainAfterExit=yes"] if spec.prepares else ["Type=simple"]),
        f"User={spec.user}",
        f"Group={spec.user}",
        *(
            [f"SupplementaryGroups={' '.join(spec.supplementary_groups)}"]
            if spec.supplementary_groups
            else []
        ),
        f"StateDirectory={spec.user}",
        f"WorkingDirectory={spec.working_directory}",
        f"EnvironmentFile={spec.env_file}",
        *(environment_line(key, value) for key, value in spec.environment.items()),
        *run_lines(spec),
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=full",
        "ProtectHome=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render_bootstrap_unit(argv: tuple[str, ...], environment: Mapping[str, str]) -> str:
    """The bootstrap's unit: ``argv`` with ``environment``, retried until it succeeded once."""
    lines = [
        "# Rendered by infra/hostboot: the host bootstrap (log: journalctl -u mlops-bootstrap)",
        "[Unit]",
        "Description=mlops-platform host bootstrap (virtualenv, host lock, secrets, databases)",
        "Wants=network-online.target",
        "After=network-online.target",
        # Restarts of a script that died are never rate-limited into a permanent failure.
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        *(environment_line(key, value) for key, value in environment.items()),
        f"ExecStart={exec_line(argv)}",
        # The script waits out unreachable services itself, for as long as it takes.
        "TimeoutStartSec=infinity",
        "Restart=on-failure",
        f"RestartSec={BOOTSTRAP_RESTART_SECONDS}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
