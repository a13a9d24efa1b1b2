"""benchmarks/mutation_score.py: the per-module table read from mutmut's result files, with equivalents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import mutation_score as ms  # noqa: E402


def test_counts_scores_equivalents_and_stale_entries(tmp_path):
    """Module a: 6 killed (exit 1), 2 survived (0), 1 unreached (33), 1 unchecked (None); one survivor is
    listed as equivalent, and so is a killed mutant (stale). Score 6 / 9; without the equivalent 6 / 8."""
    codes = {**{f"a.x__mutmut_{i}": 1 for i in range(6)}, "a.x__mutmut_6": 0, "a.x__mutmut_7": 0, "a.x__mutmut_8": 33,
             "a.x__mutmut_9": None}
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    toml = tmp_path / "eq.toml"
    toml.write_text('[[equivalent]]\nreason = "same value"\nmutants = ["a.x__mutmut_6", "a.x__mutmut_0"]\n')
    equivalent = ms.equivalents(toml)
    (c,) = ms.module_counts(tmp_path, equivalent).values()
    assert dict(c) == {"killed": 6, "equivalent": 1, "survived": 1, "no tests": 1, "not checked": 1}
    assert ms.score(c) == 6 / 9 and ms.score(c, without_equivalents=True) == 6 / 8
    assert ms.survivors(tmp_path, equivalent) == ["a.x__mutmut_7  (survived)", "a.x__mutmut_8  (no tests)"]
    assert ms.stale(tmp_path, equivalent) == ["a.x__mutmut_0"]
    assert ms.equivalents(tmp_path / "missing.toml") == {}
