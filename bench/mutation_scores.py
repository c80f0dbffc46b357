"""Per-module mutation scores from mutmut's results under ``mutants/`` (``make mutate``).

mutmut 3 keeps one ``<file>.meta`` JSON per mutated file, mapping each mutant to the exit
code of its test run; this prints, per module, how many mutants were killed (a failing
test, a timeout or a type-check rejection), survived, had no test, or were not run yet, and
the score: killed / (killed + survived + no tests).

Usage::

    python -m bench.mutation_scores [MUTANTS_DIR]                    # print the table
    python -m bench.mutation_scores [MUTANTS_DIR] --save after \\
        --note "42 min, load 5-9"                                    # and keep it
    python -m bench.mutation_scores --compare before after          # the two side by side

``--save NAME`` writes ``bench/results/mutation-NAME.json`` (the counts per module, the
date, the surviving mutants' names and the note: how long the run took, under what load) and
its table as ``mutation-NAME.md``; ``--compare`` reads two saved runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check"}
RESULTS = Path(__file__).parent / "results"


def mutant_statuses(mutants: Path) -> dict[str, dict[str, str]]:
    """Module (dotted) -> mutant name -> status, for every ``.meta`` under ``mutants``."""
    statuses: dict[str, dict[str, str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        relative = meta.relative_to(mutants).with_suffix("").with_suffix("")
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        if exit_codes:
            statuses[".".join(relative.parts)] = {
                name: status_by_exit_code[code] for name, code in exit_codes.items()
            }
    return statuses


def counts_of(statuses: dict[str, str]) -> dict[str, int]:
    """Killed, survived, no tests and not checked among one module's mutants; and of the
    killed, how many mypy rejected before any test ran (``type_check_command``)."""
    by_status = Counter(statuses.values())
    return {
        "killed": sum(by_status[status] for status in KILLED),
        "survived": by_status["survived"],
        "no tests": by_status["no tests"],
        "not checked": by_status["not checked"],
        "by type check": by_status["caught by type check"],
    }


def size_of(counts: dict[str, int]) -> int:
    """How many mutants the module has (``by type check`` is part of ``killed``)."""
    return sum(counts.get(key, 0) for key in ("killed", "survived", "no tests", "not checked"))


def score(counts: dict[str, int]) -> float | None:
    """Killed / judged (killed, survived or without a test), or None if none was judged."""
    judged = counts["killed"] + counts["survived"] + counts["no tests"]
    return counts["killed"] / judged if judged else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def table(modules: dict[str, dict[str, int]]) -> list[str]:
    """The markdown table of one run: a row per module."""
    lines = [
        "| module | killed | of which by mypy | survived | no tests | not run | score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module, counts in modules.items():
        lines.append(
            f"| {module} | {counts['killed']} | {counts.get('by type check', 0)} "
            f"| {counts['survived']} | {counts['no tests']} "
            f"| {counts['not checked']} | {_percent(score(counts))} |"
        )
    return lines


def comparison(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> list[str]:
    """The markdown table of two runs: score before, after, and what is left unkilled."""
    lines = [
        "| module | mutants | before | after | survived after | no tests after |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module in sorted(set(before) | set(after)):
        old, new = before.get(module), after.get(module)
        size = size_of(new or old or {})
        lines.append(
            f"| {module} | {size} | {_percent(score(old) if old else None)} "
            f"| {_percent(score(new) if new else None)} "
            f"| {new['survived'] if new else '-'} | {new['no tests'] if new else '-'} |"
        )
    return lines


def save(name: str, statuses: dict[str, dict[str, str]], note: str) -> Path:
    """Write the run's counts, survivors and note to ``bench/results/mutation-NAME.json``."""
    modules = {module: counts_of(found) for module, found in statuses.items()}
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": note,
        "modules": modules,
        "survivors": {
            module: sorted(m for m, status in found.items() if status in {"survived", "no tests"})
            for module, found in statuses.items()
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"mutation-{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    header = [f"# Mutation scores: {name} ({record['date']})", "", note, ""] if note else []
    path.with_suffix(".md").write_text("\n".join([*header, *table(modules)]) + "\n")
    return path


def _saved(name: str) -> dict[str, dict[str, int]]:
    path = RESULTS / f"mutation-{name}.json"
    if not path.is_file():
        raise SystemExit(f"error: no {path}: save a run with --save {name} first")
    modules: dict[str, dict[str, int]] = json.loads(path.read_text())["modules"]
    return modules


def main(argv: list[str]) -> int:
    """Print (and optionally save) one run's table, or compare two saved runs."""
    parser = argparse.ArgumentParser(prog="python -m bench.mutation_scores")
    parser.add_argument("mutants", nargs="?", default="mutants", type=Path)
    parser.add_argument("--save", metavar="NAME", help="keep as bench/results/mutation-NAME.*")
    parser.add_argument("--note", default="", help="how long the run took, under what load")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        print("\n".join(comparison(_saved(args.compare[0]), _saved(args.compare[1]))))
        return 0
    if not args.mutants.is_dir():
        print(f"error: no {args.mutants}/ directory: run `make mutate` first", file=sys.stderr)
        return 1
    statuses = mutant_statuses(args.mutants)
    print("\n".join(table({module: counts_of(found) for module, found in statuses.items()})))
    if args.save:
        print(f"saved {save(args.save, statuses, args.note)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
