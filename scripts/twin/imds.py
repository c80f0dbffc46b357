"""An IMDSv2 stand-in: what boto3's default credential chain and region lookup ask an EC2 host.

Run inside a host's namespace on 169.254.169.254:80 (``python -m scripts.twin.imds ROLE
REGION INSTANCE_ID``). As on EC2 with ``http_tokens = required`` (infra/hosts.py), every
read needs a token from ``PUT /latest/api/token``; a read without one is refused with 401.
The role's credentials are the emulator's dummies: moto accepts any.
"""

from __future__ import annotations

import json
import secrets
import sys
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from scripts.twin.settings import DUMMY_AWS_CREDENTIALS

ADDRESS = ("169.254.169.254", 80)
_TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)
_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


def documents(role: str, region: str, instance_id: str) -> dict[str, str]:
    """The metadata paths served, with their bodies."""
    expiry = (datetime.now(UTC) + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    credentials = {
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": DUMMY_AWS_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "SecretAccessKey": DUMMY_AWS_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "Token": "twin",
        "Expiration": expiry,
    }
    identity = {"region": region, "instanceId": instance_id, "accountId": "000000000000"}
    base = "/latest/meta-data"
    return {
        f"{base}/iam/security-credentials/": role,
        f"{base}/iam/security-credentials/{role}": json.dumps(credentials),
        f"{base}/instance-id": instance_id,
        f"{base}/placement/region": region,
        f"{base}/placement/availability-zone": f"{region}a",
        "/latest/dynamic/instance-identity/document": json.dumps(identity),
    }


def handler(served: dict[str, str]) -> type[BaseHTTPRequestHandler]:
    """A request handler serving ``served`` to token holders."""
    tokens: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            if self.path != "/latest/api/token" or not self.headers.get(_TTL_HEADER):
                self._answer(400, "")
                return
            token = secrets.token_urlsafe(32)
            tokens.add(token)
            self._answer(200, token)

        def do_GET(self) -> None:
            if self.headers.get(_TOKEN_HEADER) not in tokens:
                self._answer(401, "")
            elif self.path in served:
                self._answer(200, served[self.path])
            else:
                self._answer(404, "")

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"imds: {format % args}\n")

    return Handler


def main(argv: list[str]) -> None:
    """Serve the metadata of the instance ``argv`` names (ROLE REGION INSTANCE_ID)."""
    role, region, instance_id = argv
    ThreadingHTTPServer(ADDRESS, handler(documents(role, region, instance_id))).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
