"""EC2 building blocks shared by the control host and the workers (functions, not a component).

Every host: Amazon Linux 2023 x86_64, IMDSv2 only with a hop limit of 1 (containers on the
host cannot reach the instance's credentials), an encrypted gp3 root volume, an instance
profile and no SSH key (SSM Session Manager instead), user data (gzipped: EC2 caps it at
16 KB) that replaces the host when it changes, so a configuration change always reaches the
machine. A host is created only after what its boot needs (its role's policies and profile, its
subnet's routes, the objects it reads from the bucket) and is deleted before its replacement is
created: the control host keeps its fixed address, and two workers never poll the work pool
under one name.

AMI: unless ``amiId`` pins one, the newest AL2023 image is looked up, and running hosts keep
the image they were created with (``ignore_changes`` on ``ami``): a new AL2023 release does not
replace them on the next ``pulumi up``. Set ``amiId`` to roll the hosts to a chosen image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from credentials import Credentials
from hostboot.cloudconfig import gzip_user_data, user_data_base64

AL2023_OWNER = "amazon"
AL2023_NAME = "al2023-ami-2023.*-x86_64"  # the standard image; excludes minimal and ECS images
BOOT_ACTIONS = ("s3:GetObject",)  # on hostboot's BOOT_PREFIX: the host lock, read at boot
ROOT_VOLUME_GIB = 30  # the virtualenv with MLflow, Prefect and XGBoost needs several GiB


def resolve_ami(pinned: str | None, opts: pulumi.InvokeOptions) -> str:
    """The pinned AMI, or the newest Amazon Linux 2023 x86_64 image of the region."""
    if pinned:
        return pinned
    image = aws.ec2.get_ami(
        most_recent=True,
        owners=[AL2023_OWNER],
        filters=[
            {"name": "name", "values": [AL2023_NAME]},
            {"name": "architecture", "values": ["x86_64"]},
            {"name": "virtualization-type", "values": ["hvm"]},
            {"name": "root-device-type", "values": ["ebs"]},
            {"name": "state", "values": ["available"]},
        ],
        opts=opts,
    )
    return image.id


@dataclass(frozen=True, kw_only=True)
class HostContext:
    """What every host of a stack shares: image, exposure, the bucket, secrets, work pool."""

    environment: str
    region: str
    ami_id: str
    ami_pinned: bool  # False: keep each host on the image it was created with
    public_address: bool  # dev/ephemeral: a public address for egress (no inbound rule)
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    credentials: Credentials
    mlflow_admin_username: str
    mlflow_worker_username: str
    work_pool: str
    # Created before any host: the network's (routes, the control address's reservation) and
    # the objects hosts read from the bucket at boot.
    prerequisites: Sequence[pulumi.Resource]


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    """One host: its type, place, identity and user data."""

    instance_type: str
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    instance_profile: pulumi.Input[str]
    user_data: pulumi.Input[str]  # the #cloud-config text; the instance gets it gzipped
    grants: Sequence[pulumi.Resource]  # the identity's policies and profile (HostIdentity.grants)
    private_ip: str | None = None  # a fixed address (reserved by the network)
    termination_protection: bool = False


def host_instance(
    name: str, context: HostContext, spec: HostSpec, parent: pulumi.Resource
) -> aws.ec2.Instance:
    """An EC2 instance hardened as the module docstring describes."""
    return aws.ec2.Instance(
        name,
        ami=context.ami_id,
        instance_type=spec.instance_type,
        subnet_id=spec.subnet_id,
        private_ip=spec.private_ip,
        associate_public_ip_address=context.public_address,
        vpc_security_group_ids=[spec.security_group_id],
        iam_instance_profile=spec.instance_profile,
        metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
            http_endpoint="enabled",
            http_tokens="required",
            http_put_response_hop_limit=1,
        ),
        root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
            volume_type="gp3",
            volume_size=ROOT_VOLUME_GIB,
            encrypted=True,
            delete_on_termination=True,
        ),
        user_data_base64=pulumi.Output.from_input(spec.user_data).apply(user_data_base64),
        user_data_replace_on_change=True,
        disable_api_termination=spec.termination_protection,
        # Termination protection guards against hands in the console; a replacement that
        # `pulumi up` previewed (new user data) may still terminate the old host.
        force_destroy=spec.termination_protection,
        tags={"Name": name},
        opts=pulumi.ResourceOptions(
            parent=parent,
            ignore_changes=[] if context.ami_pinned else ["ami"],
            depends_on=[*context.prerequisites, *spec.grants],
            delete_before_replace=True,
        ),
    )


def upload_boot_objects(
    name: str, bucket: pulumi.Input[str], objects: Mapping[str, bytes], opts: pulumi.ResourceOptions
) -> list[aws.s3.BucketObjectv2]:
    """The objects hosts read from the bucket at boot (``hostboot.boot_objects()``).

    Their keys carry their digest, so a new version is a new object: hosts still booting
    from the old one find it until the update ends.
    """
    return [
        aws.s3.BucketObjectv2(
            f"{name}-{key.replace('/', '-')}",
            bucket=bucket,
            key=key,
            content=content.decode(),
            content_type="text/plain; charset=utf-8",
            opts=opts,
        )
        for key, content in objects.items()
    ]


USER_DATA_LIMIT = 16 * 1024  # EC2 refuses larger user data


def checked_user_data(text: str) -> str:
    """``text``, refused at preview if EC2 would refuse it (gzipped) at launch."""
    size = len(gzip_user_data(text))
    if size > USER_DATA_LIMIT:
        raise ValueError(
            f"rendered user data is {size} bytes gzipped; EC2 accepts at most {USER_DATA_LIMIT}"
        )
    return text
