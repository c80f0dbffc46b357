"""Stand-ins for the AWS services the hosts use: the emulator (moto) and a PostgreSQL server.

moto serves every AWS API on one port (S3 and Secrets Manager here); the PostgreSQL server
gets what RDS would have made: the master role (may create databases) and its first database.
Shared by both twin modes; the caller says where each stand-in listens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import boto3
import psycopg
from psycopg import sql

from scripts.common import OpsError
from scripts.twin.settings import DUMMY_AWS_CREDENTIALS, TwinConfig, new_secret


def aws_client(config: TwinConfig, endpoint: str, service: str) -> Any:
    """A boto3 client of the emulator at ``endpoint``."""
    return boto3.client(
        service,
        region_name=config.region,
        endpoint_url=endpoint,
        aws_access_key_id=DUMMY_AWS_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def create_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` in the emulator unless it exists (its state is in memory)."""
    with suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)


def create_secrets(secretsmanager: Any, prefix: str, names: tuple[str, ...]) -> dict[str, str]:
    """Generate a random secret ``<prefix>-<name>`` for each of ``names``; their ARNs by name."""
    return {
        name: secretsmanager.create_secret(Name=f"{prefix}-{name}", SecretString=new_secret())[
            "ARN"
        ]
        for name in names
    }


@contextmanager
def postgres(config: TwinConfig) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the twin's PostgreSQL server."""
    try:
        conn = psycopg.connect(
            host=config.postgres_host,
            port=config.postgres_port,
            user=config.postgres_superuser,
            dbname="postgres",
            connect_timeout=10,
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        raise OpsError(
            f"cannot connect to PostgreSQL at {config.postgres_host}:"
            f"{config.postgres_port} as {config.postgres_superuser}: "
            f"{str(exc).strip()} (the twin needs a running PostgreSQL server)"
        ) from None
    with conn:
        yield conn


def create_role_and_first_database(
    conn: psycopg.Connection[Any], config: TwinConfig, password: str, first: str
) -> None:
    """What RDS gives: the master role (may create databases and roles, is no superuser) and
    its first database."""
    role = sql.Identifier(config.name)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (config.name,))
    verb = "ALTER" if exists.fetchone() else "CREATE"
    conn.execute(
        sql.SQL(verb + " ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
            role, sql.Literal(password)
        )
    )
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (first,)).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(first), role))


def drop_role_and_databases(conn: psycopg.Connection[Any], config: TwinConfig) -> None:
    """Drop the twin's databases (closing their connections), its services' roles (named as
    their databases) and its master role."""
    for database in config.databases:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
    for role in (*config.databases, config.name):
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
