"""The env file: what is written, its mode, and what is read back or refused."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from scripts.envfile import format_env, parse_env, read_env_file, write_env_file

VALUES = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    "MLFLOW_TRACKING_PASSWORD": "it's a $ecret; with spaces",
    "EMPTY": "",
    "_UNDER_2": "x",
}


def test_values_are_written_one_per_line_quoted_for_the_shell_in_the_given_order() -> None:
    assert format_env(VALUES) == (
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5000\n"
        "MLFLOW_TRACKING_PASSWORD='it'\"'\"'s a $ecret; with spaces'\n"
        "EMPTY=''\n"
        "_UNDER_2=x\n"
    )


def test_what_is_written_is_what_a_shell_and_the_parser_read_back(tmp_path: Path) -> None:
    env_file = tmp_path / "mlops.env"
    write_env_file(env_file, VALUES)
    assert read_env_file(env_file) == VALUES
    shell = subprocess.run(
        ["bash", "-c", f'set -a; . "{env_file}"; printf %s "$MLFLOW_TRACKING_PASSWORD"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert shell.stdout == VALUES["MLFLOW_TRACKING_PASSWORD"]


@pytest.mark.parametrize("key", ["lower", "1ST", "WITH-DASH", "A B", ""])
def test_a_key_that_is_not_a_shell_variable_name_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match=rf"env file key {key!r} is not an upper-case shell"):
        format_env({key: "value"})


def test_a_value_with_a_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="env file value for KEY contains a newline"):
        format_env({"KEY": "two\nlines"})


def test_the_file_is_private_even_when_a_stale_temporary_file_was_world_readable(
    tmp_path: Path,
) -> None:
    # O_CREAT's mode applies only to a new file: a leftover temporary file keeps its own.
    stale = tmp_path / ".mlops.env.tmp"
    stale.write_text("OLD=1\n")
    stale.chmod(0o644)
    env_file = tmp_path / "mlops.env"

    write_env_file(env_file, {"KEY": "value"})

    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text() == "KEY=value\n"
    assert not stale.exists()


def test_rewriting_replaces_the_whole_file(tmp_path: Path) -> None:
    env_file = tmp_path / "mlops.env"
    write_env_file(env_file, {"FIRST": "a much longer value than the next one"})
    write_env_file(env_file, {"SECOND": "b"})
    assert env_file.read_text() == "SECOND=b\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mlops.env"]


def test_a_refused_value_writes_nothing(tmp_path: Path) -> None:
    env_file = tmp_path / "mlops.env"
    with pytest.raises(ValueError, match="newline"):
        write_env_file(env_file, {"KEY": "two\nlines"})
    assert list(tmp_path.iterdir()) == []


def test_comments_blank_lines_and_surrounding_blanks_are_ignored() -> None:
    text = "# a comment\n\n  KEY=value  \nQUOTED='a b'\nEMPTY=\n"
    assert parse_env(text) == {"KEY": "value", "QUOTED": "a b", "EMPTY": ""}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("NO_EQUALS_SIGN", r"x\.env, line 2: expected KEY=value, got 'NO_EQUALS_SIGN'"),
        ("lower=1", r"x\.env, line 2: expected KEY=value, got 'lower=1'"),
        ("KEY=two words", r"x\.env, line 2: value of KEY is not one shell word"),
    ],
)
def test_a_malformed_line_is_named_with_its_number(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_env(f"FIRST=1\n{line}\n", source="x.env")


def test_a_malformed_line_names_an_env_file_by_default() -> None:
    with pytest.raises(ValueError, match=r"^env file, line 1: "):
        parse_env("oops")


def test_a_missing_file_says_how_to_write_one(tmp_path: Path) -> None:
    missing = tmp_path / "mlops.env"
    with pytest.raises(FileNotFoundError) as raised:
        read_env_file(missing)
    assert str(raised.value) == (
        f"env file {missing} does not exist: write it with `mlops env --stack STACK` "
        "or `mlops twin up`"
    )
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_a_malformed_file_is_named_by_its_path(tmp_path: Path) -> None:
    env_file = tmp_path / "mlops.env"
    env_file.write_text("oops\n")
    with pytest.raises(ValueError, match=rf"^{env_file}, line 1: "):
        read_env_file(env_file)


def test_a_value_holding_equals_signs_is_read_back_whole(tmp_path: Path) -> None:
    # Generated secrets may end in base64 padding; only the first '=' separates the key.
    env_file = tmp_path / "mlops.env"
    values = {"PREFECT_API_AUTH_STRING": "admin:c2VjcmV0==", "EQUATION": "a=b"}

    write_env_file(env_file, values)

    assert read_env_file(env_file) == values
    assert parse_env("KEY=x=y\n") == {"KEY": "x=y"}
