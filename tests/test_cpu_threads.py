"""The thread rule of hps_core.common.cpu_threads: the step's CPU request, capped by what the process may use."""

from __future__ import annotations

import os

import pytest

from hps_core.common.cpu_threads import step_threads, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def _cpu_max(tmp_path, text):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


def test_request_capped_by_affinity(tmp_path):
    no_quota = _cpu_max(tmp_path, "max 100000\n")
    assert step_threads(1, environ={}, cgroup_cpu_max=no_quota) == 1
    assert step_threads(10_000, environ={}, cgroup_cpu_max=no_quota) == AFFINITY
    assert step_threads(0, environ={}, cgroup_cpu_max=no_quota) == 1  # never zero threads


def test_cgroup_quota_caps_a_pod(tmp_path):
    # a pod limited to 1.5 CPUs (150000/100000) may use 2 threads at most, however many cores the node has
    assert usable_cpus(_cpu_max(tmp_path, "150000 100000\n")) == min(AFFINITY, 2)
    assert usable_cpus(_cpu_max(tmp_path, "50000 100000\n")) == 1
    assert step_threads(64, environ={}, cgroup_cpu_max=_cpu_max(tmp_path, "100000 100000")) == 1
    assert usable_cpus(tmp_path / "absent") == AFFINITY
    assert usable_cpus(_cpu_max(tmp_path, "garbage")) == AFFINITY


def test_user_settings_win(tmp_path):
    no_quota = _cpu_max(tmp_path, "max 100000")
    assert step_threads(2, environ={"OMP_NUM_THREADS": "3"}, cgroup_cpu_max=no_quota) is None  # torch took it
    assert step_threads(2, environ={"HPS_CPU_THREADS": "5", "OMP_NUM_THREADS": "3"}, cgroup_cpu_max=no_quota) == 5
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="HPS_CPU_THREADS"):
            step_threads(2, environ={"HPS_CPU_THREADS": bad}, cgroup_cpu_max=no_quota)


def test_step_context_applies_the_rule(tmp_path, monkeypatch):
    import dataclasses

    import torch

    from hps_core.config.schema import PipelineConfig
    from hps_core.tracking.step_context import StepContext

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("HPS_CPU_THREADS", raising=False)
    try:
        cfg = PipelineConfig()
        StepContext(dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, cpu=1)), tmp_path)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("HPS_CPU_THREADS", "2")
        StepContext(cfg, tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_step_that_never_imports_torch_does_not_import_it_and_one_that_does_gets_its_threads(tmp_path):
    """A fresh process (torch not yet imported): the step context leaves torch unimported (validate and
    register never need it) and sets the step's threads the moment torch is imported; a second context's
    request replaces the first's; HPS_CPU_THREADS is read (and checked) when the context is made."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, pathlib\n"
        "from hps_core.config.schema import PipelineConfig\n"
        "from hps_core.tracking.step_context import StepContext\n"
        "StepContext(PipelineConfig.from_dict({'resources': {'cpu': 2}}), pathlib.Path('.'))\n"
        "StepContext(PipelineConfig.from_dict({'resources': {'cpu': 1}}), pathlib.Path('.'))\n"
        "print('torch' in sys.modules)\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
        "import importlib.resources\n"  # torch keeps its own loader (resource readers and all)
        "print(type(torch.__loader__).__name__, importlib.resources.files('torch').joinpath('__init__.py').is_file())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "HPS_CPU_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "1", "SourceFileLoader", "True"]
    bad = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "HPS_CPU_THREADS": "two"},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "HPS_CPU_THREADS='two'" in bad.stderr
