"""``mlops cost``: the monthly estimate from a stack's configuration, and the schedule it uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hostboot import schedule
from typer.testing import CliRunner

from scripts import cost
from scripts.cli import app
from scripts.common import REPO_ROOT, OpsError


def total(stack: str, **settings: object) -> float:
    merged = {**cost.stack_settings(stack), **settings}
    return round(cost.estimate(cost.sizes_of(stack, merged)).monthly_usd, 2)


def test_dev_costs_about_47_dollars_with_its_default_schedule_and_88_without() -> None:
    # Mon-Fri 07:00-20:00: hosts and their addresses run 65 of 168 hours a week.
    hosts = 730 * 65 / 168
    scheduled = 2 * 0.0416 * hosts + 2 * 0.005 * hosts + 0.016 * 730 + 20 * 0.115 + 4.8 + 1.6
    assert total("dev") == round(scheduled, 2) == 46.70
    assert total("dev", hostSchedule="always") == 88.42


def test_prod_pays_for_multi_az_and_the_nat_gateway_around_the_clock() -> None:
    expected = (
        0.0832 * 730  # t3.large control host
        + 2 * 0.1008 * 730  # 2 x m7i.large workers
        + 2 * (0.032 * 730 + 50 * 0.115)  # db.t4g.small multi-AZ, 50 GiB
        + 3 * 30 * 0.08  # root volumes
        + (0.045 + 0.005) * 730  # NAT gateway and its address
        + 4 * 0.40  # secrets
    )
    assert total("prod") == round(expected, 2) == 311.42


def test_the_infrastructure_page_quotes_the_estimates() -> None:
    readme = (REPO_ROOT / "docs" / "infrastructure.md").read_text()
    quoted = {int(n) for n in re.findall(r"about \$(\d+) a month", readme)}
    assert {round(total("dev", hostSchedule="always")), round(total("prod"))} <= quoted
    assert round(total("dev")) in quoted


def test_the_command_prints_each_line_the_total_and_the_prices() -> None:
    result = CliRunner().invoke(app, ["cost", "--stack", "dev", "--prices"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("monthly estimate of stack dev (dev): us-east-1 on-demand")
    assert any(re.fullmatch(r"  total\s+\$\s*46\.70", line) for line in lines)
    assert any("t3.medium, 65 of 168 hours a week" in line for line in lines)
    assert "  EC2 t3.medium: 0.0416/hour" in lines


def test_an_unknown_instance_type_is_named(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text((REPO_ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.big.yaml").write_text(
        "config:\n  mlops-platform:workerInstanceType: p5.48xlarge\n"
    )
    settings = cost.stack_settings("big", tmp_path)
    with pytest.raises(OpsError, match=r"no price for EC2 type 'p5\.48xlarge'.*known: "):
        cost.estimate(cost.sizes_of("big", settings))


def test_a_stack_without_a_config_file_is_named() -> None:
    result = CliRunner().invoke(app, ["cost", "--stack", "staging"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no stack configuration Pulumi.staging.yaml in ")
    assert "stacks here: dev, prod" in result.stderr


@pytest.mark.parametrize(
    ("text", "hours", "start", "stop"),
    [
        ("Mon-Fri 07:00-20:00 UTC", 65.0, "cron(0 7 ? * MON,TUE,WED,THU,FRI *)", "cron(0 20"),
        ("sat,Sun 10:30-12:00 Asia/Tokyo", 3.0, "cron(30 10 ? * SAT,SUN *)", "cron(0 12"),
        ("Mon-Wed,Wed-Thu 00:00-23:59 UTC", 4 * 1439 / 60, "cron(0 0 ? * MON,TUE,WED,THU", ""),
    ],
)
def test_schedules_give_hours_and_cron_expressions(
    text: str, hours: float, start: str, stop: str
) -> None:
    parsed = schedule.parse(text)
    assert parsed is not None
    assert parsed.hours_per_week == pytest.approx(hours)
    assert parsed.start_cron.startswith(start)
    assert parsed.stop_cron.startswith(stop)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected DAYS HH:MM-HH:MM ZONE"),
        ("Mon-Fri 9-17 UTC", "expected DAYS HH:MM-HH:MM ZONE"),
        ("Sun-Mon 07:00-20:00 UTC", "runs backwards"),
        ("Mon-Fri 20:00-07:00 UTC", "must be before the stop"),
        ("Mon-Fri 07:00-20:60 UTC", "not a time of day"),
        ("Mon-Fri 07:00-20:00 Europe/Atlantis", "unknown IANA time zone"),
        ("Mo-Fr 07:00-20:00 UTC", "expected DAYS"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        schedule.parse(text)


def test_always_and_the_environment_defaults() -> None:
    assert schedule.parse("Always") is None
    assert schedule.default_for("prod") == "always"
    assert schedule.default_for("dev") == schedule.default_for("ephemeral")
