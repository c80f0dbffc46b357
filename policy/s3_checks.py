"""S3: the artifact bucket's access block, encryption, versioning, lifecycle, TLS-only policy
and ownership (invariants 1-7, 44), each on the resource that configures it, and a stack check
that every bucket has all of them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from properties import Context, Finding, configuring, items, number, of_type, plain, statements
from pulumi_policy.policy import PolicyResource
from resource_types import (
    BUCKET,
    BUCKET_ACL,
    BUCKET_POLICY,
    BUCKET_V2,
    ENCRYPTION,
    LIFECYCLE,
    OWNERSHIP,
    PUBLIC_ACCESS,
    VERSIONING,
)

MIN_TLS = 1.2
PUBLIC_GROUPS = ("AllUsers", "AuthenticatedUsers")  # ACL grantee groups: anyone, any AWS account


def s3_public_access_blocked(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for flag in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        if props.get(flag) is not True:
            yield f"{flag} must be true"


def s3_encrypted(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for rule in items(props.get("rules")):
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        algorithm = default.get("sseAlgorithm")
        if algorithm == "AES256" or (algorithm == "aws:kms" and rule.get("bucketKeyEnabled")):
            continue
        yield f"encryption must be AES256 or aws:kms with a bucket key; got {algorithm!r}"
    if not items(props.get("rules")):
        yield "no encryption rule"


def s3_versioned(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    status = (props.get("versioningConfiguration") or {}).get("status")
    allowed = ("Enabled", "Suspended") if ctx.environment == "ephemeral" else ("Enabled",)
    if status not in allowed:
        yield f"versioning must be {' or '.join(allowed)} in {ctx.environment}; got {status!r}"


def s3_lifecycle(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    enabled = [r for r in items(props.get("rules")) if r.get("status") == "Enabled"]
    if not any(
        number((r.get("noncurrentVersionExpiration") or {}).get("noncurrentDays"), 0) > 0
        for r in enabled
    ):
        yield "no enabled rule expires noncurrent versions"
    if not any(
        number((r.get("abortIncompleteMultipartUpload") or {}).get("daysAfterInitiation"), 0) > 0
        for r in enabled
    ):
        yield "no enabled rule aborts incomplete multipart uploads"


def _is_everyone(principal: Any) -> bool:
    return principal == "*" or (
        isinstance(principal, Mapping) and "*" in items(principal.get("AWS"))
    )


def s3_policy_tls_only(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    policy = statements(props.get("policy"))
    for statement in policy:
        if statement.get("Effect") == "Allow" and _is_everyone(statement.get("Principal")):
            yield "a statement allows principal *"
    denials = [
        s
        for s in policy
        if s.get("Effect") == "Deny"
        and _is_everyone(s.get("Principal"))
        and set(items(s.get("Action"))) & {"s3:*", "*"}
        and str((s.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")).lower()
        == "false"
    ]
    covered = {r for s in denials for r in items(s.get("Resource"))}
    if not any(f"{arn}/*" in covered for arn in covered):
        yield "no statement denies aws:SecureTransport=false on the bucket and its objects"
    old_tls = [
        s
        for s in policy
        if s.get("Effect") == "Deny"
        and _is_everyone(s.get("Principal"))
        and set(items(s.get("Action"))) & {"s3:*", "*"}
        and float((s.get("Condition") or {}).get("NumericLessThan", {}).get("s3:TlsVersion", 0))
        >= MIN_TLS
    ]
    covered = {r for s in old_tls for r in items(s.get("Resource"))}
    if not any(f"{arn}/*" in covered for arn in covered):
        yield f"no statement denies TLS older than {MIN_TLS} on the bucket and its objects"


def s3_owner_enforced(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if resource_type == OWNERSHIP:
        ownership = (props.get("rule") or {}).get("objectOwnership")
        if ownership != "BucketOwnerEnforced":
            yield f"object ownership must be BucketOwnerEnforced; got {ownership!r}"
    elif props.get("acl") not in (None, "private"):
        yield f"public or shared ACL {props.get('acl')!r}"
    if resource_type == BUCKET_ACL:
        grants = (props.get("accessControlPolicy") or {}).get("grants")
        # Under the engine a grant is a read-only mapping proxy: read its values, not its repr.
        if any(group in json.dumps(plain(g)) for g in items(grants) for group in PUBLIC_GROUPS):
            yield "an ACL grant to AllUsers or AuthenticatedUsers"


def s3_force_destroy(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if ctx.is_prod and props.get("forceDestroy") is True:
        yield "forceDestroy must be false in prod"


def buckets(resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    return of_type(resources, BUCKET, BUCKET_V2)


def bucket_fully_configured(resources: Sequence[PolicyResource], ctx: Context) -> Iterator[Finding]:
    """Invariants 1-6 need one resource each per bucket: check that every bucket has them."""
    required = {
        PUBLIC_ACCESS: "a public access block",
        ENCRYPTION: "server-side encryption",
        LIFECYCLE: "a lifecycle configuration",
        BUCKET_POLICY: "a TLS-only bucket policy",
        OWNERSHIP: "ownership controls",
    }
    if ctx.environment != "ephemeral":
        required[VERSIONING] = "versioning"
    for bucket in buckets(resources):
        for resource_type, what in required.items():
            if not configuring(resources, bucket, resource_type, "bucket"):
                yield f"bucket {bucket.name} has no {what}", bucket.urn
