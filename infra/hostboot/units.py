"""systemd unit files rendered from :class:`~hostboot.services.ServiceSpec`.

Every unit restarts on failure after a pause, starts once the network is online, runs as its
dedicated non-root user with its own state directory, reads its secrets from a root-only env
file (systemd reads it before dropping privileges), and is stopped by its spec's signals in
turn, with SIGKILL for whatever remains after the stop timeout.
"""

from __future__ import annotations

import re

from hostboot.services import NFT, ServiceSpec

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


def stop_lines(spec: ServiceSpec) -> list[str]:
    """The stop: every signal but the last from ``ExecStop=``, the last as ``KillSignal=``."""
    *first, last = spec.stop_signals
    lines = [f"ExecStop=/usr/bin/kill -s {signal} $MAINPID" for signal in first]
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
    lines.append(f"ExecStart={exec_line(spec.argv)}")
    if spec.post_start:
        lines.append(f"ExecStartPost={exec_line(spec.post_start)}")
    lines.append(f"TimeoutStartSec={spec.start_timeout_seconds}")
    return lines


def render_unit(spec: ServiceSpec) -> str:
    """The ``<name>.service`` file for ``spec``."""
    lines = [
        "# Rendered by infra/hostboot; the local twin runs this same command line.",
        "[Unit]",
        f"Description={spec.description}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={spec.user}",
        f"Group={spec.user}",
        f"StateDirectory={spec.user}",
        f"WorkingDirectory={spec.working_directory}",
        f"EnvironmentFile={spec.env_file}",
        *(environment_line(key, value) for key, value in spec.environment.items()),
        *start_lines(spec),
        *stop_lines(spec),
        "Restart=on-failure",
        f"RestartSec={spec.restart_seconds}",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=full",
        "ProtectHome=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
