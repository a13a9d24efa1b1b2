"""The mutation score per module of the last `mutmut run` (configured in pyproject.toml, [tool.mutmut]).

    mutmut run                                # ~100 min on 2 cores for the whole core; resumable (Ctrl-C, run again)
    python benchmarks/mutation_score.py       # a Markdown table per module, then the unexplained survivors
    python benchmarks/mutation_score.py --survivors-only

Score = killed / (killed + survived + no tests): a mutant that no selected test reaches counts as a miss,
as does one that survives them; timeouts count as killed (the mutant broke the code's termination), mutants
not yet checked are left out and counted in their own column. Survivors listed in
``benchmarks/mutation_equivalents.toml`` (each with the reason no input can tell it from the original)
are counted in the ``equivalent`` column and left out of the second score; a listed mutant that no longer
survives (the code or its numbering changed) is reported as stale. Read from mutmut's own result files
(``mutants/**/*.py.meta``), so the table matches `mutmut results`.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections import Counter
from pathlib import Path

# mutmut 3's exit codes per mutant (mutmut/stats.py: status_by_exit_code)
KILLED = {1, 3, 36, -24, 24, 152, 255, 37}
SURVIVED, NO_TESTS, NOT_CHECKED = {0}, {5, 33}, {None}
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.toml")


def equivalents(path: Path) -> dict[str, str]:
    """Mutant name -> why it is equivalent, from the TOML list (``[[equivalent]] reason = ..., mutants = [...]``)."""
    if not path.is_file():
        return {}
    return {name: entry["reason"] for entry in tomllib.loads(path.read_text())["equivalent"] for name in entry["mutants"]}


def _status(code, name: str, equivalent: dict[str, str]) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED | NO_TESTS:
        return "equivalent" if name in equivalent else "survived" if code in SURVIVED else "no tests"
    return "not checked" if code in NOT_CHECKED else "other"


def results(mutants_dir: Path) -> dict[str, dict[str, int | None]]:
    """Module path -> {mutant name: exit code} for every mutated module."""
    out = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if codes:
            out[meta.relative_to(mutants_dir).as_posix().removesuffix(".meta")] = codes
    return out


def module_counts(mutants_dir: Path, equivalent: dict[str, str] | None = None) -> dict[str, Counter]:
    equivalent = equivalent or {}
    return {module: Counter(_status(code, name, equivalent) for name, code in codes.items())
            for module, codes in results(mutants_dir).items()}


def score(c: Counter, *, without_equivalents: bool = False) -> float:
    judged = c["killed"] + c["survived"] + c["no tests"] + (0 if without_equivalents else c["equivalent"])
    return c["killed"] / judged if judged else float("nan")


def survivors(mutants_dir: Path, equivalent: dict[str, str] | None = None) -> list[str]:
    """Surviving and unreached mutants not explained as equivalent."""
    equivalent = equivalent or {}
    return [f"{name}  ({_status(code, name, equivalent)})" for codes in results(mutants_dir).values()
            for name, code in codes.items() if _status(code, name, equivalent) in ("survived", "no tests")]


def stale(mutants_dir: Path, equivalent: dict[str, str]) -> list[str]:
    """Listed equivalents that are not survivors of the last run (renumbered, killed, or not checked)."""
    codes = {name: code for c in results(mutants_dir).values() for name, code in c.items()}
    return sorted(name for name in equivalent if codes.get(name, None) not in SURVIVED | NO_TESTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--equivalents", type=Path, default=EQUIVALENTS)
    parser.add_argument("--survivors-only", action="store_true")
    args = parser.parse_args()
    equivalent = equivalents(args.equivalents)
    if not args.survivors_only:
        counts = module_counts(args.mutants, equivalent)
        total = sum(counts.values(), Counter())
        print("| module | mutants | killed | survived | no tests | equivalent | not checked | score | score without equivalents |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for module, c in [*counts.items(), ("**all**", total)]:
            print(f"| {module} | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['no tests']} | "
                  f"{c['equivalent']} | {c['not checked']} | {score(c):.1%} | {score(c, without_equivalents=True):.1%} |")
        print()
        for name in stale(args.mutants, equivalent):
            print(f"stale equivalent (not a survivor of this run): {name}")
    print("\n".join(survivors(args.mutants, equivalent)))


if __name__ == "__main__":
    main()
