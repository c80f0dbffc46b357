"""The CrossGuard policy pack enforcing SECURITY_INVARIANTS.md on the stack's resources.

Run it with the program: ``pulumi preview --policy-pack policy`` (or ``pulumi up ...``). The
rules table is ``rules.py`` (which invariant each policy enforces, and the check it runs); this
entry point only builds the pack, which starts the analyzer server the Pulumi CLI talks to (so
nothing else may import this module).
"""

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import policies

PolicyPack(
    name="mlops-platform-invariants",
    description="Security and reliability invariants of the mlops-platform stacks.",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
