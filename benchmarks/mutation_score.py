"""The mutation score per module of the last `mutmut run` (configured in pyproject.toml, [tool.mutmut]).

    mutmut run                                # hours on 2 cores for the whole core; resumable (Ctrl-C, run again)
    python benchmarks/mutation_score.py       # a Markdown table per module, then the surviving mutants
    python benchmarks/mutation_score.py --survivors-only

Score = killed / (killed + survived + no tests): a mutant that no selected test reaches counts as a miss,
as does one that survives them; timeouts count as killed (the mutant broke the code's termination), mutants
not yet checked are left out and counted in their own column. Read from mutmut's own result files
(``mutants/**/*.py.meta``), so the table matches `mutmut results`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

# mutmut 3's exit codes per mutant (mutmut/stats.py: status_by_exit_code)
KILLED = {1, 3, 36, -24, 24, 152, 255, 37}
SURVIVED, NO_TESTS, NOT_CHECKED = {0}, {5, 33}, {None}


def module_counts(mutants_dir: Path) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        module = meta.relative_to(mutants_dir).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        c = Counter()
        for code in codes.values():
            c["killed" if code in KILLED else "survived" if code in SURVIVED else "no tests" if code in NO_TESTS
              else "not checked" if code in NOT_CHECKED else "other"] += 1
        if codes:
            counts[module] = c
    return counts


def score(c: Counter) -> float:
    judged = c["killed"] + c["survived"] + c["no tests"]
    return c["killed"] / judged if judged else float("nan")


def survivors(mutants_dir: Path) -> list[str]:
    out = []
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        for key, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            if code in SURVIVED | NO_TESTS:
                out.append(f"{key}  ({'survived' if code in SURVIVED else 'no tests'})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--survivors-only", action="store_true")
    args = parser.parse_args()
    if not args.survivors_only:
        counts = module_counts(args.mutants)
        total = sum(counts.values(), Counter())
        print("| module | mutants | killed | survived | no tests | not checked | score |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for module, c in [*counts.items(), ("**all**", total)]:
            print(f"| {module} | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['no tests']} | "
                  f"{c['not checked']} | {score(c):.1%} |")
        print()
    print("\n".join(survivors(args.mutants)))


if __name__ == "__main__":
    main()
