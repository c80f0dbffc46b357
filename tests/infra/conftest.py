"""Run the Pulumi program (infra/) under mocks, once per example stack, and keep what it registered.

The mocks answer like the AWS and random providers would: ids and ARNs of the right shape,
auto-generated names, RDS addresses and endpoints, allocated private and public IPs, passwords
of the requested length and alphabet, and the provider functions the program calls (zones,
instance type offerings, the AMI lookup). A resource type or function without a model here
fails the run, so a new resource cannot slip past with made-up outputs.

Tests assert on the collected registrations after the program has run (never inside an
``apply``, which might never run): see ``ProgramRun``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import runpy
import string
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import get_root_resource, reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROJECT = "mlops-platform"
ACCOUNT = "123456789012"
AMI_ID = "ami-0abcdef1234567890"
AMI_NAME = "al2023-ami-2023.6.20250115.0-kernel-6.1-x86_64"
ZONE_LETTERS = "abcdef"
STACKS = ("dev", "prod", "ephemeral")
# An ephemeral stack has no example file: `mlops ephemeral create` copies dev's configuration
# and sets the environment kind.
EPHEMERAL_BASE = "dev"
EPHEMERAL_EXPIRY = "2026-12-01T09:00:00Z"

if str(INFRA) not in sys.path:  # the program's modules import each other as siblings
    sys.path.insert(0, str(INFRA))
if str(ROOT / "policy") not in sys.path:  # resource_types: the type tokens, shared with the pack
    sys.path.insert(0, str(ROOT / "policy"))

import hostboot  # noqa: E402  (after INFRA is importable, like under `pulumi up`)


@dataclass(frozen=True)
class EngineView:
    """What the engine received besides the inputs (the mock provider never sees it)."""

    urn: str = ""
    parent: str = ""
    protect: bool = False
    ignore_changes: tuple[str, ...] = ()
    delete_before_replace: bool = False
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dependencies: tuple[str, ...] = ()  # every URN it waits for (depends_on and properties)


@dataclass(frozen=True)
class Registered:
    """One resource the program registered: its inputs and the state the mock provider returned."""

    type: str
    name: str
    id: str
    inputs: Mapping[str, Any]  # as the engine received them; secrets still wrapped
    state: Mapping[str, Any]  # inputs plus computed outputs, secrets unwrapped
    provider: str | None  # provider reference "urn::id"
    engine: EngineView

    def get(self, key: str, default: Any = None) -> Any:
        """An input's plain value (a secret unwrapped)."""
        return rpc.unwrap_rpc_secret(self.inputs.get(key, default))

    def is_secret(self, key: str) -> bool:
        """Whether the input arrived as a Pulumi secret."""
        return rpc.is_rpc_secret(self.inputs.get(key))


Tamper = Callable[[str, str, dict[str, Any]], dict[str, Any]]  # (type, name, inputs) -> inputs


class Mocks(pulumi.runtime.Mocks):
    """Realistic AWS and random providers for one program run."""

    ami_id = AMI_ID  # what the AMI lookup answers

    def __init__(
        self,
        region: str,
        *,
        stack: str,
        unoffered_zones: str = "e",
        tamper: Tamper | None = None,
    ) -> None:
        self.region = region
        self.unoffered_zones = unoffered_zones  # zones offering none of the host types
        self.rng = random.Random(stack)
        self.resources: list[Registered] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []
        self.tamper = tamper  # rewrites a resource's inputs: proves the checks catch it
        self.engine = EngineView()  # set by EngineRecordingMonitor per resource
        self.secret_output_names: set[str] = set()  # ditto
        self._subnet_cidrs: dict[str, str] = {}
        self._next_host: dict[str, int] = {}

    # -- resources -------------------------------------------------------------------------

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        """Compute the id and outputs a real provider would return, and record the resource."""
        if not args.custom:  # a component (mlops:index:*): no provider, no state
            return "", {}
        model = _MODELS.get(args.typ)
        if model is None:
            raise NotImplementedError(f"Mocks has no model for resource type {args.typ}")
        inputs = dict(args.inputs)
        if self.tamper:
            inputs = self.tamper(args.typ, args.name, inputs)
        plain = {k: rpc.unwrap_rpc_secret(v) for k, v in inputs.items()}
        resource_id, computed = model(self, args.name, plain)
        state = {**plain, **computed}
        self.resources.append(
            Registered(args.typ, args.name, resource_id, inputs, state, args.provider, self.engine)
        )
        returned = {**inputs, **computed}
        for name in self.secret_output_names & returned.keys():
            returned[name] = rpc.wrap_rpc_secret(rpc.unwrap_rpc_secret(returned[name]))
        return resource_id, returned

    def hex_id(self, prefix: str, length: int = 17) -> str:
        return prefix + "".join(self.rng.choices("0123456789abcdef", k=length))

    def suffix(self, length: int = 7) -> str:
        """Pulumi's auto-naming suffix."""
        return "".join(self.rng.choices(string.ascii_lowercase + string.digits, k=length))

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:aws:{service}:{region}:{ACCOUNT}:{resource}"

    def private_ip(self, subnet_id: str, requested: str | None) -> str:
        """The requested address, or the next free one of the subnet (as EC2 allocates)."""
        cidr = ipaddress.IPv4Network(self._subnet_cidrs[subnet_id])
        if requested:
            if ipaddress.IPv4Address(requested) not in cidr:
                raise ValueError(f"private IP {requested} is outside subnet {cidr}")
            return requested
        self._next_host[subnet_id] = self._next_host.get(subnet_id, 100) + 1
        return str(cidr.network_address + self._next_host[subnet_id])

    def public_ip(self) -> str:
        return f"203.0.113.{self.rng.randint(1, 254)}"

    # -- provider functions ----------------------------------------------------------------

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        """Answer the provider functions the program calls."""
        self.calls.append(args)
        zones = [f"{self.region}{letter}" for letter in ZONE_LETTERS]
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {
                "id": self.region,
                "names": zones,
                "zoneIds": [f"use1-az{n}" for n in range(1, len(zones) + 1)],
                "groupNames": [self.region] * len(zones),
            }
        if args.token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            (types,) = [f["values"] for f in args.args["filters"] if f["name"] == "instance-type"]
            offered = [z for z in zones if z[-1] not in self.unoffered_zones]
            pairs = [(t, z) for t in types for z in offered]
            return {
                "id": self.region,
                "instanceTypes": [t for t, _ in pairs],
                "locations": [z for _, z in pairs],
                "locationTypes": ["availability-zone"] * len(pairs),
            }
        if args.token == "aws:ec2/getAmi:getAmi":
            return {
                "id": AMI_ID,
                "imageId": AMI_ID,
                "name": AMI_NAME,
                "architecture": "x86_64",
                "ownerId": "137112412989",
                "rootDeviceType": "ebs",
                "virtualizationType": "hvm",
                "arn": f"arn:aws:ec2:{self.region}::image/{AMI_ID}",
            }
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "id": ACCOUNT,
                "accountId": ACCOUNT,
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy/pulumi",
                "userId": "AROAEXAMPLE:pulumi",
            }
        raise NotImplementedError(f"Mocks has no answer for function {args.token}")


class EngineRecordingMonitor(MockMonitor):
    """The mock monitor, plus what the engine sees of each registration.

    It records the URN, parent, ``protect``, ``ignoreChanges``, ``deleteBeforeReplace``, the
    dependencies and the property dependencies (what a stack policy follows between
    resources), and does what the engine does with ``additionalSecretOutputs`` (a random
    password's ``result`` comes back secret), which the stock mock monitor ignores.
    Registrations are serialised to pair each request with its resource.
    """

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method name
        mocks: Mocks = self.mocks  # type: ignore[assignment]
        with self._lock:
            mocks.secret_output_names = set(request.additionalSecretOutputs)
            mocks.engine = EngineView(
                urn=self.make_urn(request.parent, request.type, request.name),
                parent=request.parent,
                protect=request.protect,
                ignore_changes=tuple(request.ignoreChanges),
                delete_before_replace=request.deleteBeforeReplace,
                property_dependencies={
                    key: tuple(deps.urns) for key, deps in request.propertyDependencies.items()
                },
                dependencies=tuple(request.dependencies),
            )
            return super().RegisterResource(request)


Model = Callable[[Mocks, str, dict[str, Any]], tuple[str, dict[str, Any]]]


def _named(key: str, *, lower: bool = False) -> Callable[[Mocks, str, dict[str, Any]], str]:
    """The given physical name, or Pulumi's auto-name (logical name plus a random suffix)."""

    def name(m: Mocks, logical: str, inputs: dict[str, Any]) -> str:
        given = inputs.get(key)
        auto = f"{logical}-{m.suffix()}"
        return given or (auto.lower() if lower else auto)

    return name


def _simple(prefix: str, service: str = "ec2", kind: str = "") -> Model:
    def model(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rid = m.hex_id(prefix)
        return rid, {"arn": m.arn(service, f"{kind}/{rid}")} if kind else {}

    return model


def _subnet(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = m.hex_id("subnet-")
    m._subnet_cidrs[rid] = inputs["cidrBlock"]
    return rid, {"arn": m.arn("ec2", f"subnet/{rid}"), "ownerId": ACCOUNT}


def _security_group(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = m.hex_id("sg-")
    name = _named("name")(m, logical, inputs)
    return rid, {
        "arn": m.arn("ec2", f"security-group/{rid}"),
        "name": name,
        "ownerId": ACCOUNT,
        "ingress": inputs.get("ingress", []),  # at creation: only the inline rules
        "egress": inputs.get("egress", []),  # (AWS's default allow-all egress is removed)
    }


def _bucket(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _named("bucket", lower=True)(m, logical, inputs)
    return name, {
        "bucket": name,
        "arn": f"arn:aws:s3:::{name}",
        "bucketDomainName": f"{name}.s3.amazonaws.com",
        "bucketRegionalDomainName": f"{name}.s3.{m.region}.amazonaws.com",
        "region": m.region,
        "hostedZoneId": "Z3AQBSTGFYJSTF",
    }


def _bucket_part(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return inputs["bucket"], {}


def _secret(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _named("name")(m, logical, inputs)
    tail = "".join(m.rng.choices(string.ascii_letters, k=6))
    arn = m.arn("secretsmanager", f"secret:{name}-{tail}")
    return arn, {"arn": arn, "name": name}


def _secret_version(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    version = m.hex_id("", 32)
    return f"{inputs['secretId']}|{version}", {"arn": inputs["secretId"], "versionId": version}


def _random_password(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    alphabet = ""
    if inputs.get("lower", True):
        alphabet += string.ascii_lowercase
    if inputs.get("upper", True):
        alphabet += string.ascii_uppercase
    if inputs.get("numeric", True):
        alphabet += string.digits
    if inputs.get("special", True):
        alphabet += inputs.get("overrideSpecial") or "!@#$%&*()-_=+[]{}<>:?"
    value = "".join(m.rng.choices(alphabet, k=int(inputs["length"])))
    return "none", {"result": value, "bcryptHash": "$2a$10$" + m.hex_id("", 53)}


def _random_id(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    hex_value = m.hex_id("", 2 * int(inputs["byteLength"]))
    return hex_value, {"hex": hex_value, "dec": str(int(hex_value, 16))}


def _db_named(kind: str) -> Model:
    def model(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        name = _named("name", lower=True)(m, logical, inputs)
        return name, {"name": name, "arn": m.arn("rds", f"{kind}:{name}")}

    return model


def _db_instance(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    identifier = _named("identifier", lower=True)(m, logical, inputs)
    address = f"{identifier}.c{m.hex_id('', 11)}.{m.region}.rds.amazonaws.com"
    port = int(inputs.get("port", 5432))
    resource_id = "db-" + "".join(m.rng.choices(string.ascii_uppercase + string.digits, k=26))
    return resource_id, {
        "identifier": identifier,
        "address": address,
        "port": port,
        "endpoint": f"{address}:{port}",
        "arn": m.arn("rds", f"db:{identifier}"),
        "resourceId": resource_id,
        "engineVersionActual": "16.8",
        "hostedZoneId": "Z2R2ITUGPM61AM",
    }


def _iam_named(kind: str) -> Model:
    def model(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        name = _named("name")(m, logical, inputs)
        return name, {"name": name, "arn": m.arn("iam", f"{kind}/{name}", regional=False)}

    return model


def _role_policy(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _named("name")(m, logical, inputs)
    return f"{inputs['role']}:{name}", {"name": name}


def _attachment(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return f"{inputs['role']}-{m.hex_id('', 26)}", {}


def _eip(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = m.hex_id("eipalloc-")
    return rid, {"allocationId": rid, "publicIp": m.public_ip()}


def _nat(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return m.hex_id("nat-"), {"privateIp": m.private_ip(inputs["subnetId"], None)}


def _endpoint(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = m.hex_id("vpce-")
    return rid, {"arn": m.arn("ec2", f"vpc-endpoint/{rid}"), "prefixListId": "pl-63a5400a"}


def _instance(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = m.hex_id("i-")
    private_ip = m.private_ip(inputs["subnetId"], inputs.get("privateIp"))
    computed: dict[str, Any] = {
        "arn": m.arn("ec2", f"instance/{rid}"),
        "privateIp": private_ip,
        "privateDns": f"ip-{private_ip.replace('.', '-')}.ec2.internal",
        "primaryNetworkInterfaceId": m.hex_id("eni-"),
        "instanceState": "running",
    }
    if inputs.get("associatePublicIpAddress"):
        computed["publicIp"] = m.public_ip()
    return rid, computed


def _reservation(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    cidr = ipaddress.IPv4Network(inputs["cidrBlock"])
    if not cidr.subnet_of(ipaddress.IPv4Network(m._subnet_cidrs[inputs["subnetId"]])):
        raise ValueError(f"reservation {cidr} is outside its subnet")
    return m.hex_id("scr-"), {"ownerId": ACCOUNT}


def _bucket_object(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    etag = m.hex_id("", 32)
    return inputs["key"], {"etag": etag, "versionId": m.hex_id("", 32), "arn": ""}


def _schedule(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _named("name")(m, logical, inputs)
    group = inputs.get("groupName") or "default"
    return f"{group}/{name}", {
        "name": name,
        "groupName": group,
        "arn": m.arn("scheduler", f"schedule/{group}/{name}"),
    }


def _topic(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    arn = m.arn("sns", _named("name")(m, logical, inputs))
    return arn, {"arn": arn}


def _topic_policy(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return inputs["arn"], {"owner": ACCOUNT}


def _subscription(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    arn = f"{inputs['topic']}:{m.hex_id('', 32)}"
    return arn, {"arn": arn, "pendingConfirmation": True}


def _budget(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _named("name")(m, logical, inputs)
    return f"{ACCOUNT}:{name}", {"name": name, "arn": f"arn:aws:budgets::{ACCOUNT}:budget/{name}"}


def _provider(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return m.hex_id("", 32), {}


_MODELS: dict[str, Model] = {
    "pulumi:providers:aws": _provider,
    "aws:ec2/vpc:Vpc": _simple("vpc-", kind="vpc"),
    "aws:ec2/subnet:Subnet": _subnet,
    "aws:ec2/internetGateway:InternetGateway": _simple("igw-", kind="internet-gateway"),
    "aws:ec2/routeTable:RouteTable": _simple("rtb-", kind="route-table"),
    "aws:ec2/route:Route": _simple("r-rtb-"),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _simple("rtbassoc-"),
    "aws:ec2/eip:Eip": _eip,
    "aws:ec2/natGateway:NatGateway": _nat,
    "aws:ec2/vpcEndpoint:VpcEndpoint": _endpoint,
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": _security_group,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _simple(
        "sgr-", kind="security-group-rule"
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _simple(
        "sgr-", kind="security-group-rule"
    ),
    "aws:ec2/instance:Instance": _instance,
    "aws:ec2/subnetCidrReservation:SubnetCidrReservation": _reservation,
    "aws:s3/bucketObjectv2:BucketObjectv2": _bucket_object,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": _bucket_part,
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": _bucket_part,
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        _bucket_part
    ),
    "aws:s3/bucketVersioning:BucketVersioning": _bucket_part,
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": _bucket_part,
    "aws:s3/bucketPolicy:BucketPolicy": _bucket_part,
    "aws:secretsmanager/secret:Secret": _secret,
    "aws:secretsmanager/secretVersion:SecretVersion": _secret_version,
    "random:index/randomPassword:RandomPassword": _random_password,
    "random:index/randomId:RandomId": _random_id,
    "aws:rds/subnetGroup:SubnetGroup": _db_named("subgrp"),
    "aws:rds/parameterGroup:ParameterGroup": _db_named("pg"),
    "aws:rds/instance:Instance": _db_instance,
    "aws:iam/role:Role": _iam_named("role"),
    "aws:iam/instanceProfile:InstanceProfile": _iam_named("instance-profile"),
    "aws:iam/rolePolicy:RolePolicy": _role_policy,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _attachment,
    "aws:scheduler/schedule:Schedule": _schedule,
    "aws:sns/topic:Topic": _topic,
    "aws:sns/topicPolicy:TopicPolicy": _topic_policy,
    "aws:sns/topicSubscription:TopicSubscription": _subscription,
    "aws:budgets/budget:Budget": _budget,
}
# -- running the program ---------------------------------------------------------------------


@dataclass
class ProgramRun:
    """Everything one run of the program registered, exported and rendered."""

    stack: str
    config: dict[str, str]
    mocks: Mocks
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    control_settings: list[hostboot.ControlHostSettings] = field(default_factory=list)
    worker_settings: list[hostboot.WorkerHostSettings] = field(default_factory=list)

    @property
    def environment(self) -> str:
        return self.config[f"{PROJECT}:environment"]

    @property
    def resources(self) -> list[Registered]:
        return self.mocks.resources

    def of_type(self, resource_type: str) -> list[Registered]:
        """Every registered resource of a type token (a test asserting on none fails here)."""
        found = [r for r in self.resources if r.type == resource_type]
        assert found, f"the {self.stack} program registered no {resource_type}"
        return found

    def one(self, resource_type: str) -> Registered:
        (found,) = self.of_type(resource_type)
        return found

    def by_id(self, resource_id: str) -> Registered:
        (found,) = [r for r in self.resources if r.id == resource_id]
        return found


def _config_text(value: object) -> str:
    """A config value as the Pulumi CLI hands it to the program (strings; JSON for lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def stack_config(stack: str, overrides: Mapping[str, object] | None = None) -> dict[str, str]:
    """Pulumi.yaml defaults, then Pulumi.<stack>.yaml, then ``overrides`` (as the CLI merges)."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    values: dict[str, object] = {
        f"{PROJECT}:{key}": spec["default"] for key, spec in project["config"].items()
    }
    example = EPHEMERAL_BASE if stack == "ephemeral" else stack
    values.update(yaml.safe_load((ROOT / f"Pulumi.{example}.yaml").read_text())["config"])
    if stack == "ephemeral":  # what `mlops ephemeral create` sets
        values[f"{PROJECT}:environment"] = "ephemeral"
        values[f"{PROJECT}:deletionProtection"] = False
        values[f"{PROJECT}:expiresAt"] = EPHEMERAL_EXPIRY
    values.update(overrides or {})
    return {key: _config_text(value) for key, value in values.items()}


@contextlib.contextmanager
def _recording_renderers(run: ProgramRun) -> Iterator[None]:
    """Record the settings the program hands the host-bootstrap renderer."""
    control, worker = hostboot.render_control_user_data, hostboot.render_worker_user_data

    def record_control(settings: hostboot.ControlHostSettings) -> str:
        run.control_settings.append(settings)
        return control(settings)

    def record_worker(settings: hostboot.WorkerHostSettings) -> str:
        run.worker_settings.append(settings)
        return worker(settings)

    hostboot.render_control_user_data = record_control
    hostboot.render_worker_user_data = record_worker
    try:
        yield
    finally:
        hostboot.render_control_user_data = control
        hostboot.render_worker_user_data = worker


async def _resolve_outputs(run: ProgramRun) -> None:
    root = get_root_resource()
    assert root is not None
    for name, value in root.outputs.items():  # type: ignore[attr-defined]
        output = pulumi.Output.from_input(value)
        run.outputs[name] = await output.future()
        if await output.is_secret():
            run.secret_outputs.add(name)


def run_program(
    stack: str, config: Mapping[str, str] | None = None, mocks: Mocks | None = None
) -> ProgramRun:
    """Run infra/__main__.py for a stack under mocks, to completion, and return what it did."""
    config = dict(config if config is not None else stack_config(stack))
    mocks = mocks or Mocks(config.get("aws:region", "us-east-1"), stack=stack)
    run = ProgramRun(stack=stack, config=config, mocks=mocks)
    reset_options(project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(config)
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT, stack=stack, preview=False, monitor=EngineRecordingMonitor(mocks)
    )

    def program() -> Any:
        runpy.run_path(str(INFRA / "__main__.py"), run_name="__main__")
        return _resolve_outputs(run)

    with _recording_renderers(run):
        _sync_await(run_pulumi_func(program))
    return run


_RUNS: dict[str, ProgramRun] = {}


def program_run(stack: str) -> ProgramRun:
    """The (cached) run of an example stack."""
    if stack not in _RUNS:
        _RUNS[stack] = run_program(stack)
    return _RUNS[stack]


class Harness:
    """Runs the program the way a test needs (test modules take it as the ``harness`` fixture:
    they never import conftest, whose module name other test folders share)."""

    root = ROOT
    stacks = STACKS

    config = staticmethod(stack_config)
    run = staticmethod(run_program)
    cached = staticmethod(program_run)

    @staticmethod
    def mocks(stack: str = "dev", **options: Any) -> Mocks:
        """Mocks for us-east-1; ``options``: ``unoffered_zones``, ``tamper``."""
        return Mocks("us-east-1", stack=stack, **options)

    @staticmethod
    def empty_run(stack: str = "dev") -> ProgramRun:
        """A run of nothing: what a check sees if the program registered no resources."""
        return ProgramRun(stack=stack, config=stack_config(stack), mocks=Harness.mocks(stack))


@pytest.fixture(scope="session")
def harness() -> Harness:
    return Harness()


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    """The program's run for each example stack: dev, prod, ephemeral."""
    return program_run(request.param)
