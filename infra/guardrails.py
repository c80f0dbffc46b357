"""Cost guardrails: the hosts sleep outside their schedule, and a budget alerts on spend.

- **Host schedule**: two EventBridge Scheduler schedules call EC2's StartInstances and
  StopInstances (universal targets) on the stack's hosts, in the schedule's time zone, through
  a role that trusts only EventBridge Scheduler from this account and may only start and stop
  these instances. The services come back by themselves: every unit is enabled and waits for
  its dependencies (the database keeps running; a flow run cut by the stop is marked crashed).
- **Budget**: an AWS Budgets cost budget on the stack's ``Stack`` cost allocation tag (the
  provider's default tags put it on every resource; activate it once per account under
  Billing > Cost allocation tags), alerting an SNS topic at 80% of actual and 100% of forecast
  spend, with an optional e-mail subscription.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from hostboot.schedule import HostSchedule

SCHEDULER_SERVICE = "scheduler.amazonaws.com"
BUDGETS_SERVICE = "budgets.amazonaws.com"
START_TARGET = "arn:aws:scheduler:::aws-sdk:ec2:startInstances"
STOP_TARGET = "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
ACTUAL_ALERT_PERCENT = 80
FORECAST_ALERT_PERCENT = 100


@dataclass(frozen=True, kw_only=True)
class GuardrailsArgs:
    """Inputs of the cost guardrails."""

    stack: str
    instance_ids: Sequence[pulumi.Input[str]]  # every host the schedule starts and stops
    instance_arns: Sequence[pulumi.Input[str]]
    schedule: HostSchedule | None  # None: hosts always on
    monthly_budget_usd: int  # 0: no budget
    alert_email: str | None


class Guardrails(pulumi.ComponentResource):
    """The host schedule and the budget of one stack (each only when configured)."""

    alert_topic_arn: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: GuardrailsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:Guardrails", name, None, opts)
        if args.schedule is not None:
            self._schedule(name, args, args.schedule)
        self.alert_topic_arn = self._budget(name, args) if args.monthly_budget_usd > 0 else None
        self.register_outputs({"alert_topic_arn": self.alert_topic_arn})

    def _schedule(self, name: str, args: GuardrailsArgs, schedule: HostSchedule) -> None:
        """The scheduler's role and the start and stop schedules."""
        child = pulumi.ResourceOptions(parent=self)
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self))
        role = aws.iam.Role(
            f"{name}-scheduler",
            description="EventBridge Scheduler: start and stop the stack's hosts",
            assume_role_policy=account.account_id.apply(_scheduler_trust),
            tags={"Name": f"{name}-scheduler"},
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-scheduler",
            role=role.id,
            policy=pulumi.Output.all(*args.instance_arns).apply(_start_stop_policy),
            opts=child,
        )
        instances = pulumi.Output.all(*args.instance_ids).apply(
            lambda ids: json.dumps({"InstanceIds": list(ids)})
        )
        for action, target, expression in (
            ("start", START_TARGET, schedule.start_cron),
            ("stop", STOP_TARGET, schedule.stop_cron),
        ):
            aws.scheduler.Schedule(
                f"{name}-{action}",
                description=f"{action.capitalize()} the hosts of stack {args.stack}",
                schedule_expression=expression,
                schedule_expression_timezone=schedule.zone,
                flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
                target=aws.scheduler.ScheduleTargetArgs(
                    arn=target, role_arn=role.arn, input=instances
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
            )

    def _budget(self, name: str, args: GuardrailsArgs) -> pulumi.Output[str]:
        """The alert topic (Budgets may publish to it), its subscription and the budget."""
        child = pulumi.ResourceOptions(parent=self)
        topic = aws.sns.Topic(f"{name}-alerts", tags={"Name": f"{name}-alerts"}, opts=child)
        aws.sns.TopicPolicy(
            f"{name}-alerts",
            arn=topic.arn,
            policy=topic.arn.apply(_budgets_may_publish),
            opts=child,
        )
        if args.alert_email:
            aws.sns.TopicSubscription(
                f"{name}-alerts-email",
                topic=topic.arn,
                protocol="email",
                endpoint=args.alert_email,
                opts=child,
            )
        aws.budgets.Budget(
            f"{name}-budget",
            budget_type="COST",
            limit_amount=str(args.monthly_budget_usd),
            limit_unit="USD",
            time_unit="MONTHLY",
            cost_filters=[
                aws.budgets.BudgetCostFilterArgs(
                    name="TagKeyValue", values=[f"user:Stack${args.stack}"]
                )
            ],
            notifications=[
                aws.budgets.BudgetNotificationArgs(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=percent,
                    threshold_type="PERCENTAGE",
                    subscriber_sns_topic_arns=[topic.arn],
                )
                for kind, percent in (
                    ("ACTUAL", ACTUAL_ALERT_PERCENT),
                    ("FORECASTED", FORECAST_ALERT_PERCENT),
                )
            ],
            tags={"Name": f"{name}-budget"},
            opts=child,
        )
        return topic.arn


def _scheduler_trust(account_id: str) -> str:
    """Only EventBridge Scheduler acting for this account may assume the role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": SCHEDULER_SERVICE},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                }
            ],
        }
    )


def _start_stop_policy(instance_arns: Sequence[str]) -> str:
    """Start and stop exactly the stack's instances, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["ec2:StartInstances", "ec2:StopInstances"],
                    "Resource": list(instance_arns),
                }
            ],
        }
    )


def _budgets_may_publish(topic_arn: str) -> str:
    """AWS Budgets of this account may publish to the topic; nobody else is granted."""
    account_id = topic_arn.split(":")[4]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "BudgetsPublish",
                    "Effect": "Allow",
                    "Principal": {"Service": BUDGETS_SERVICE},
                    "Action": "SNS:Publish",
                    "Resource": topic_arn,
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                }
            ],
        }
    )
