"""Per-module mutation scores from mutmut's results under ``mutants/`` (``make mutate``).

mutmut 3 keeps one ``<file>.meta`` JSON per mutated file, mapping each mutant to the exit
code of its test run; this prints, per module, how many mutants were killed (a failing
test, a timeout or a type-check rejection), survived, had no test, or were not run yet, and
the score: killed / (killed + survived + no tests).

Usage: ``python -m bench.mutation_scores [mutants-dir]``
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check"}
COUNTED = (*sorted(KILLED), "survived", "no tests", "not checked")


def module_counts(mutants: Path) -> dict[str, Counter[str]]:
    """Module (dotted) -> number of mutants per status, for every ``.meta`` under ``mutants``."""
    counts: dict[str, Counter[str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        relative = meta.relative_to(mutants).with_suffix("").with_suffix("")
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts[".".join(relative.parts)] = Counter(
            status_by_exit_code[code] for code in exit_codes.values()
        )
    return counts


def score_line(module: str, counts: Counter[str]) -> str:
    """One table row: module, killed, survived, no tests, not checked, score."""
    killed = sum(counts[status] for status in KILLED)
    judged = killed + counts["survived"] + counts["no tests"]
    score = f"{100 * killed / judged:.0f}%" if judged else "-"
    return (
        f"| {module} | {killed} | {counts['survived']} | {counts['no tests']} "
        f"| {counts['not checked']} | {score} |"
    )


def main(argv: list[str]) -> int:
    """Print the markdown table of scores for the mutants directory (default ``mutants``)."""
    mutants = Path(argv[0] if argv else "mutants")
    if not mutants.is_dir():
        print(f"error: no {mutants}/ directory: run `make mutate` first", file=sys.stderr)
        return 1
    print("| module | killed | survived | no tests | not run | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for module, counts in module_counts(mutants).items():
        if sum(counts.values()):
            print(score_line(module, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
