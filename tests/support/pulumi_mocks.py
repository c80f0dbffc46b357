"""Pulumi mocks that answer like the AWS and random providers would.

Ids and ARNs of the right shape, auto-generated names, RDS addresses and endpoints, allocated
private and public IPs, passwords of the requested length and alphabet, and the provider
functions the program calls (zones, instance type offerings, the AMI lookup). A resource type
or function without a model here fails the run, so a new resource cannot slip past with
made-up outputs. ``Mocks`` also keeps what the engine saw of each registration (``EngineView``),
which the stock mock provider never sees.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.runtime import rpc
from resource_types import (
    ASSOCIATION,
    AWS_PROVIDER,
    BUCKET,
    BUCKET_OBJECT,
    BUCKET_POLICY,
    BUDGET,
    DB,
    DB_PARAMS,
    DB_SUBNETS,
    DEFAULT_GROUP,
    EGRESS_RULE,
    EIP,
    ENCRYPTION,
    GROUP,
    INGRESS_RULE,
    INSTANCE,
    INSTANCE_PROFILE,
    INTERNET_GATEWAY,
    LIFECYCLE,
    NAT,
    OWNERSHIP,
    PUBLIC_ACCESS,
    RANDOM_ID,
    RANDOM_PASSWORD,
    ROLE,
    ROLE_POLICY,
    ROLE_POLICY_ATTACHMENT,
    ROUTE,
    ROUTE_TABLE,
    SCHEDULE,
    SECRET,
    SECRET_VERSION,
    SUBNET,
    SUBNET_RESERVATION,
    SUBSCRIPTION,
    TLS_CERT_REQUEST,
    TLS_LOCALLY_SIGNED_CERT,
    TLS_PRIVATE_KEY,
    TLS_SELF_SIGNED_CERT,
    TOPIC,
    TOPIC_POLICY,
    VERSIONING,
    VPC,
    VPC_ENDPOINT,
)

if TYPE_CHECKING:  # the engine's wire protocol: only the type, for annotations
    from pulumi.runtime.proto.resource_pb2 import RegisterResourceRequest

ACCOUNT = "123456789012"
AMI_ID = "ami-0abcdef1234567890"
AMI_NAME = "al2023-ami-2023.6.20250115.0-kernel-6.1-x86_64"
ZONE_LETTERS = "abcdef"


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
        self.engine = EngineView()  # set by ``see`` per resource
        self.secret_output_names: set[str] = set()  # ditto
        self._subnet_cidrs: dict[str, str] = {}
        self._next_host: dict[str, int] = {}

    # -- resources -------------------------------------------------------------------------

    def see(self, request: RegisterResourceRequest, urn: str) -> None:
        """Keep what the engine receives of the next registration besides its inputs: its URN,
        parent, ``protect``, ``ignoreChanges``, ``deleteBeforeReplace``, dependencies and
        property dependencies (what a stack policy follows between resources); and its
        ``additionalSecretOutputs``, which ``new_resource`` returns secret as the engine would
        (a random password's ``result``). Called by ``run_under_mocks``, one at a time."""
        self.secret_output_names = set(request.additionalSecretOutputs)
        self.engine = EngineView(
            urn=urn,
            parent=request.parent,
            protect=request.protect,
            ignore_changes=tuple(request.ignoreChanges),
            delete_before_replace=request.deleteBeforeReplace,
            property_dependencies={
                key: tuple(deps.urns) for key, deps in request.propertyDependencies.items()
            },
            dependencies=tuple(request.dependencies),
        )

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

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Answer the provider functions the program calls (with no check failures)."""
        self.calls.append(args)
        return self._answer(args), []

    def _answer(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
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


def _pem(m: Mocks, label: str, size: int) -> str:
    """A PEM block of ``size`` random bytes: the shape pulumi-tls returns (not a usable key)."""
    body = base64.b64encode(m.rng.randbytes(size)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def _validity(inputs: dict[str, Any]) -> dict[str, Any]:
    """A certificate's validity window from its requested hours, as pulumi-tls reports it."""
    start = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    end = start + timedelta(hours=int(inputs["validityPeriodHours"]))
    return {
        "validityStartTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "validityEndTime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "readyForRenewal": False,
    }


def _tls_key(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    labels = {"RSA": "RSA PRIVATE KEY", "ECDSA": "EC PRIVATE KEY", "ED25519": "PRIVATE KEY"}
    algorithm = inputs.get("algorithm", "RSA")
    if algorithm not in labels:
        raise ValueError(f"pulumi-tls has no key algorithm {algorithm!r}")
    fingerprint = ":".join(f"{b:02x}" for b in m.rng.randbytes(16))
    return m.hex_id("", 40), {
        "privateKeyPem": _pem(m, labels[algorithm], 121),
        "privateKeyPemPkcs8": _pem(m, "PRIVATE KEY", 138),
        "privateKeyOpenssh": _pem(m, "OPENSSH PRIVATE KEY", 240),
        "publicKeyPem": _pem(m, "PUBLIC KEY", 91),
        "publicKeyOpenssh": "ecdsa-sha2-nistp256 "
        + base64.b64encode(m.rng.randbytes(104)).decode(),
        "publicKeyFingerprintMd5": fingerprint,
        "publicKeyFingerprintSha256": "SHA256:" + base64.b64encode(m.rng.randbytes(32)).decode(),
    }


def _tls_self_signed(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "BEGIN" not in inputs.get("privateKeyPem", ""):
        raise ValueError("a self-signed certificate needs its private key's PEM")
    serial = str(m.rng.getrandbits(127))
    return serial, {
        "certPem": _pem(m, "CERTIFICATE", 420),
        "keyAlgorithm": "ECDSA",
        **_validity(inputs),
    }


def _tls_request(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "BEGIN" not in inputs.get("privateKeyPem", ""):
        raise ValueError("a certificate request needs its private key's PEM")
    return m.hex_id("", 40), {
        "certRequestPem": _pem(m, "CERTIFICATE REQUEST", 300),
        "keyAlgorithm": "ECDSA",
    }


def _tls_signed(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for key in ("certRequestPem", "caCertPem", "caPrivateKeyPem"):
        if "BEGIN" not in inputs.get(key, ""):
            raise ValueError(f"a locally signed certificate needs {key}")
    serial = str(m.rng.getrandbits(127))
    return serial, {
        "certPem": _pem(m, "CERTIFICATE", 440),
        "caKeyAlgorithm": "ECDSA",
        **_validity(inputs),
    }


def _provider(m: Mocks, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return m.hex_id("", 32), {}


_MODELS: dict[str, Model] = {
    AWS_PROVIDER: _provider,
    VPC: _simple("vpc-", kind="vpc"),
    SUBNET: _subnet,
    INTERNET_GATEWAY: _simple("igw-", kind="internet-gateway"),
    ROUTE_TABLE: _simple("rtb-", kind="route-table"),
    ROUTE: _simple("r-rtb-"),
    ASSOCIATION: _simple("rtbassoc-"),
    EIP: _eip,
    NAT: _nat,
    VPC_ENDPOINT: _endpoint,
    DEFAULT_GROUP: _security_group,
    GROUP: _security_group,
    INGRESS_RULE: _simple("sgr-", kind="security-group-rule"),
    EGRESS_RULE: _simple("sgr-", kind="security-group-rule"),
    INSTANCE: _instance,
    SUBNET_RESERVATION: _reservation,
    BUCKET_OBJECT: _bucket_object,
    BUCKET: _bucket,
    PUBLIC_ACCESS: _bucket_part,
    OWNERSHIP: _bucket_part,
    ENCRYPTION: (_bucket_part),
    VERSIONING: _bucket_part,
    LIFECYCLE: _bucket_part,
    BUCKET_POLICY: _bucket_part,
    SECRET: _secret,
    SECRET_VERSION: _secret_version,
    RANDOM_PASSWORD: _random_password,
    RANDOM_ID: _random_id,
    DB_SUBNETS: _db_named("subgrp"),
    DB_PARAMS: _db_named("pg"),
    DB: _db_instance,
    ROLE: _iam_named("role"),
    INSTANCE_PROFILE: _iam_named("instance-profile"),
    ROLE_POLICY: _role_policy,
    ROLE_POLICY_ATTACHMENT: _attachment,
    SCHEDULE: _schedule,
    TOPIC: _topic,
    TOPIC_POLICY: _topic_policy,
    SUBSCRIPTION: _subscription,
    BUDGET: _budget,
    TLS_PRIVATE_KEY: _tls_key,
    TLS_SELF_SIGNED_CERT: _tls_self_signed,
    TLS_CERT_REQUEST: _tls_request,
    TLS_LOCALLY_SIGNED_CERT: _tls_signed,
}
