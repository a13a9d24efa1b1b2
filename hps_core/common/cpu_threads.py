"""How many CPU threads torch may use in a step: the step's CPU request, never more CPUs than it can get.

torch's default is one thread per core it can see, and it sees the whole machine: a pod that asked for 2
CPUs on a 64-core node starts 64 threads that the CPU quota then throttles, and two steps run side by side
on a laptop (``train_sft`` beside ``train_reward_model``, the comparison's branches under
``--max-workers``) each start one thread per core. Oversubscribed OpenMP threads spin at every barrier
while the thread they wait for is descheduled: measured on the 2-core dev box, two side-by-side steps took
over 4x longer with torch's default than with one thread each (README "Method comparison").

The rule: ``[resources] cpu`` of the config (what a pod requests), capped by the CPUs this process may
run on (its affinity mask and, in a container, its cgroup CPU quota). ``HPS_CPU_THREADS`` overrides it;
a user's ``OMP_NUM_THREADS`` is respected as it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import math
import os
import sys
from pathlib import Path

OVERRIDE_VAR = "HPS_CPU_THREADS"
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def usable_cpus(cgroup_cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """CPUs this process can use: its affinity mask, capped by a cgroup v2 CPU quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity mask is the bound
    return max(1, cpus)


def step_threads(cpu_request: int, environ: dict[str, str] | None = None, cgroup_cpu_max: Path = _CGROUP_CPU_MAX) -> int | None:
    """Threads for a step that requested ``cpu_request`` CPUs; None when the user set OMP_NUM_THREADS
    (torch has already taken it). Raises ValueError on a malformed ``HPS_CPU_THREADS``."""
    environ = os.environ if environ is None else environ
    if environ.get(OVERRIDE_VAR):
        value = environ[OVERRIDE_VAR]
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{OVERRIDE_VAR}={value!r}: expected a whole number of threads >= 1 (or unset it)")
        return int(value)
    if environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, min(int(cpu_request), usable_cpus(cgroup_cpu_max)))


def configure_torch_threads(cpu_request: int) -> int:
    """Apply :func:`step_threads` to torch (intra-op threads) in this process; returns the thread count."""
    import torch

    threads = step_threads(cpu_request)
    if threads is not None:
        _set_threads(torch, threads)
    return torch.get_num_threads()


def _set_threads(torch, threads: int) -> None:
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def configure_torch_threads_when_imported(cpu_request: int) -> int | None:
    """:func:`configure_torch_threads` now if torch is imported, else the moment it is: a step that never
    imports torch (validate, register) does not pay ~1.5 s to import it only to set its threads. Returns the
    thread count set now, or None when it is deferred (or the user's OMP_NUM_THREADS governs)."""
    if "torch" in sys.modules:
        return configure_torch_threads(cpu_request)
    threads = step_threads(cpu_request)  # read now: a malformed HPS_CPU_THREADS fails the step at its start
    if threads is not None:
        for finder in [f for f in sys.meta_path if isinstance(f, _SetThreadsOnTorchImport)]:
            sys.meta_path.remove(finder)  # a later step context's request replaces an earlier one's
        sys.meta_path.insert(0, _SetThreadsOnTorchImport(threads))
    return None


class _SetThreadsOnTorchImport(importlib.abc.MetaPathFinder):
    """Finds ``torch`` as the other finders would, and sets its threads right after its module has run."""

    def __init__(self, threads: int):
        self.threads = threads

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)  # once, and out of the way of the real lookup below
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        # Wrap exec_module on torch's own loader (not a stand-in loader): the module keeps a __loader__
        # with every method its loader has (resource readers, get_data, ...).
        loader, threads = spec.loader, self.threads
        run_module = loader.exec_module

        def exec_module(module):
            run_module(module)
            _set_threads(module, threads)

        loader.exec_module = exec_module
        return spec
