"""The layout's rules, checked on the code as it is: packages are floors and imports only point down (the
import-linter contracts in pyproject.toml), no import circles, no module over 400 lines, and the old entry
points users name still work."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    """`lint-imports` reads [tool.importlinter] in pyproject.toml: the floors, and mlflow only in tracking/."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_no_import_circles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("hps_core", include_external_packages=False, cache_dir=None)
    circles = [(m, i) for m in sorted(graph.modules) for i in graph.find_modules_directly_imported_by(m)
               if graph.find_shortest_chain(importer=i, imported=m)]
    assert circles == []


def test_modules_stay_small_and_hps_core_top_level_is_packages():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "hps_core").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 400} == {}
    top = sorted(p.name for p in (ROOT / "hps_core").glob("*.py"))
    assert top == ["__init__.py", "cli.py", "lineage.py"]  # the console script; `python -m hps_core.lineage`


def test_ruff_is_clean():
    exe = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([exe, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


def test_old_entry_points_keep_working_or_name_the_new_path():
    result = subprocess.run([sys.executable, "-m", "hps_core.lineage", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--verify" in result.stdout
    import hps_core.lineage as old

    with pytest.raises(AttributeError, match="hps_core.common.digests"):
        old.file_sha256  # noqa: B018
    with pytest.raises(AttributeError, match="hps_core.registry.lineage"):
        old.lineage_record  # noqa: B018
    from hps_core.config import parse_config_text  # the name every flow gives Metaflow's Config

    assert callable(parse_config_text)
