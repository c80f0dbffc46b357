"""Cost guardrails in the program: the host schedule, the budget, the expiry, snapshot restores."""

from __future__ import annotations

import json
from typing import Any

import pytest
from resource_types import (
    AWS_PROVIDER,
    BUDGET,
    DB,
    INSTANCE,
    RANDOM_PASSWORD,
    ROLE,
    ROLE_POLICY,
    SCHEDULE,
    SUBSCRIPTION,
    TOPIC,
    TOPIC_POLICY,
)

from tests.infra.test_infra_program import run_with
from tests.support.program import Harness, ProgramRun
from tests.support.pulumi_mocks import Registered


def registered(run: ProgramRun, resource_type: str) -> list[Registered]:
    """The resources of a type, possibly none (``of_type`` insists on at least one)."""
    return [r for r in run.resources if r.type == resource_type]


def schedules(run: ProgramRun) -> dict[str, Any]:
    """The start and stop schedules by action, as registered."""
    found = {}
    for schedule in registered(run, SCHEDULE):
        action = schedule.name.rsplit("-", 1)[-1]
        found[action] = schedule.state
    return found


@pytest.mark.parametrize("stack", ["dev", "ephemeral"])
def test_throwaway_stacks_sleep_outside_working_hours_by_default(
    harness: Harness, stack: str
) -> None:
    run = harness.run(stack)
    found = schedules(run)
    assert set(found) == {"start", "stop"}
    assert found["start"]["scheduleExpression"] == "cron(0 7 ? * MON,TUE,WED,THU,FRI *)"
    assert found["stop"]["scheduleExpression"] == "cron(0 20 ? * MON,TUE,WED,THU,FRI *)"
    assert {s["scheduleExpressionTimezone"] for s in found.values()} == {"UTC"}
    assert found["start"]["target"]["arn"] == "arn:aws:scheduler:::aws-sdk:ec2:startInstances"
    assert found["stop"]["target"]["arn"] == "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
    hosts = sorted(i.id for i in run.of_type(INSTANCE))
    for schedule in found.values():
        assert sorted(json.loads(schedule["target"]["input"])["InstanceIds"]) == hosts
        assert schedule["flexibleTimeWindow"] == {"mode": "OFF"}


def test_prod_hosts_never_stop_unless_asked(harness: Harness) -> None:
    assert schedules(harness.run("prod")) == {}
    asked = run_with(harness, "prod", hostSchedule="Mon-Sat 06:30-22:00 Europe/Berlin")
    found = schedules(asked)
    assert found["start"]["scheduleExpression"] == "cron(30 6 ? * MON,TUE,WED,THU,FRI,SAT *)"
    assert found["stop"]["scheduleExpressionTimezone"] == "Europe/Berlin"


def test_always_turns_the_schedule_off(harness: Harness) -> None:
    run = run_with(harness, "dev", hostSchedule="always")
    assert schedules(run) == {}
    assert not [r for r in registered(run, ROLE) if r.name.endswith("-scheduler")]


def test_the_scheduler_may_only_start_and_stop_the_stacks_hosts(harness: Harness) -> None:
    run = harness.run("dev")
    (policy,) = [p for p in run.of_type(ROLE_POLICY) if "scheduler" in p.name]
    (statement,) = json.loads(policy.get("policy"))["Statement"]
    assert statement["Action"] == ["ec2:StartInstances", "ec2:StopInstances"]
    arns = sorted(i.state["arn"] for i in run.of_type(INSTANCE))
    assert sorted(statement["Resource"]) == arns
    (role,) = [r for r in run.of_type(ROLE) if r.name.endswith("-scheduler")]
    assert policy.get("role") == role.id
    for schedule in run.of_type(SCHEDULE):
        assert schedule.state["target"]["roleArn"] == role.state["arn"]


def test_budget_alerts_its_topic_on_the_stacks_cost_tag(harness: Harness) -> None:
    run = run_with(harness, "dev", monthlyBudgetUsd=150, budgetAlertEmail="ml-team@example.com")
    budget = run.one(BUDGET)
    topic = run.one(TOPIC)
    assert budget.get("limitAmount") == "150"
    assert budget.get("limitUnit") == "USD"
    assert budget.get("timeUnit") == "MONTHLY"
    assert budget.get("costFilters") == [{"name": "TagKeyValue", "values": ["user:Stack$dev"]}]
    kinds = {(n["notificationType"], n["threshold"]) for n in budget.get("notifications")}
    assert kinds == {("ACTUAL", 80), ("FORECASTED", 100)}
    for notification in budget.get("notifications"):
        assert notification["subscriberSnsTopicArns"] == [topic.state["arn"]]
    (statement,) = json.loads(run.one(TOPIC_POLICY).get("policy"))["Statement"]
    assert statement["Principal"] == {"Service": "budgets.amazonaws.com"}
    assert statement["Action"] == "SNS:Publish"
    assert statement["Resource"] == topic.state["arn"]
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"].isdigit()
    subscription = run.one(SUBSCRIPTION)
    assert (subscription.get("protocol"), subscription.get("endpoint")) == (
        "email",
        "ml-team@example.com",
    )
    assert run.outputs["budget_alert_topic_arn"] == topic.state["arn"]


def test_no_budget_when_zero_and_no_subscription_without_an_address(harness: Harness) -> None:
    assert not registered(run_with(harness, "dev", monthlyBudgetUsd=0), BUDGET)
    run = harness.run("dev")
    assert run.one(BUDGET).get("limitAmount") == "200"
    assert not registered(run, SUBSCRIPTION)


def test_cost_allocation_tag_is_on_every_resource(harness: Harness) -> None:
    run = harness.run("dev")
    tags = json.loads(run.one(AWS_PROVIDER).get("defaultTags"))["tags"]
    assert tags["Stack"] == "dev"


def test_an_ephemeral_stack_carries_its_expiry(harness: Harness) -> None:
    run = harness.run("ephemeral")
    tags = json.loads(run.one(AWS_PROVIDER).get("defaultTags"))["tags"]
    assert tags["ExpiresAt"] == "2026-12-01T09:00:00Z"
    assert run.outputs["expires_at"] == "2026-12-01T09:00:00Z"
    assert "expires_at" not in harness.run("dev").outputs


def test_a_database_restored_from_a_snapshot_keeps_its_names_and_gets_our_password(
    harness: Harness,
) -> None:
    run = run_with(harness, "ephemeral", restoreFromSnapshot="prod-backup-20261129-0900")
    db = run.one(DB)
    assert db.get("snapshotIdentifier") == "prod-backup-20261129-0900"
    # The snapshot brings the databases and the master user; setting them would be refused.
    assert db.get("dbName") is None
    assert db.get("username") is None
    # The stack's generated master password is set on the restored instance (the boot step
    # uses it; each service has its own role's password besides).
    (password,) = [p for p in run.of_type(RANDOM_PASSWORD) if p.name.endswith("-db-password")]
    assert db.state["password"] == password.state["result"]
    fresh = harness.run("ephemeral").one(DB)
    assert fresh.get("snapshotIdentifier") is None
    assert (fresh.get("dbName"), fresh.get("username")) == ("mlflow", "mlops")
