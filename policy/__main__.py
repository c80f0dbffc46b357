"""The CrossGuard policy pack enforcing SECURITY_INVARIANTS.md on the stack's resources.

Run it with the program: ``pulumi preview --policy-pack policy`` (or ``pulumi up ...``). The
checks live in ``invariant_checks``; this entry point only builds the pack, which starts the
analyzer server the Pulumi CLI talks to (so nothing else may import this module).
"""

from invariant_checks import policies
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="mlops-platform-invariants",
    description="Security and reliability invariants of the mlops-platform stacks.",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
