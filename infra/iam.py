"""Host identities: an instance role and profile per kind of host, scoped to what it uses.

Each role trusts only EC2, has ``AmazonSSMManagedInstanceCore`` (Session Manager replaces SSH
keys and port 22) and one inline policy: S3 actions on the artifact bucket and the prefixes
the host works in, and ``secretsmanager:GetSecretValue`` on exactly the secrets its boot
script fetches. There are no IAM users and no access keys anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

SSM_CORE_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
EC2_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class ObjectGrant:
    """S3 object actions allowed under one key prefix of the bucket (``prefix`` ends in /)."""

    prefix: str
    actions: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class HostIdentityArgs:
    """Inputs of a host identity."""

    description: str
    bucket_arn: pulumi.Input[str]
    object_grants: Sequence[ObjectGrant]
    secret_arns: Sequence[pulumi.Input[str]]
    bucket_actions: tuple[str, ...] = field(default=("s3:ListBucket", "s3:GetBucketLocation"))


class HostIdentity(pulumi.ComponentResource):
    """Role, policies and instance profile of one kind of host."""

    instance_profile_name: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    # What an instance using the profile must wait for: without them its boot finds no
    # credentials, or credentials that may not read its secrets yet.
    grants: list[pulumi.Resource]

    def __init__(
        self, name: str, args: HostIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:HostIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            description=args.description,
            assume_role_policy=pulumi.Output.json_dumps(EC2_TRUST_POLICY),
            tags={"Name": f"{name}-role"},
            opts=child,
        )
        ssm_core = aws.iam.RolePolicyAttachment(
            f"{name}-ssm-core", role=role.name, policy_arn=SSM_CORE_POLICY_ARN, opts=child
        )
        access = aws.iam.RolePolicy(
            f"{name}-access", role=role.id, policy=access_policy(args), opts=child
        )
        profile = aws.iam.InstanceProfile(
            f"{name}-profile", role=role.name, tags={"Name": f"{name}-profile"}, opts=child
        )

        self.instance_profile_name = profile.name
        self.role_arn = role.arn
        self.grants = [ssm_core, access, profile]
        self.register_outputs(
            {"instance_profile_name": self.instance_profile_name, "role_arn": self.role_arn}
        )


def access_policy(args: HostIdentityArgs) -> pulumi.Output[str]:
    """The inline policy: the bucket, the granted prefixes, and the host's own secrets."""
    statements: list[dict[str, object]] = [
        {
            "Sid": "ArtifactBucket",
            "Effect": "Allow",
            "Action": list(args.bucket_actions),
            "Resource": args.bucket_arn,
        }
    ]
    statements += [
        {
            "Sid": f"Objects{index}",
            "Effect": "Allow",
            "Action": list(grant.actions),
            "Resource": pulumi.Output.concat(args.bucket_arn, "/", grant.prefix, "*"),
        }
        for index, grant in enumerate(args.object_grants)
    ]
    statements.append(
        {
            "Sid": "OwnSecrets",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": list(args.secret_arns),
        }
    )
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})
