"""Shared test set-up: no network, caches in a temp dir, a real MLflow server when a test asks for one."""

import os

# Tests never reach a model hub or MLflow's telemetry; set before anything imports transformers/mlflow.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Metaflow's client refuses root or a missing $USER (CI containers); the flow file does the same for runs.
if not any(os.environ.get(v, "root") != "root" for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")):
    os.environ["METAFLOW_USER"] = "hps-test"

import typing  # noqa: E402

import pytest  # noqa: E402
import typing_extensions  # noqa: E402

# Metaflow vendors its own typing_extensions, which replaces typing._collect_parameters with a copy that
# only knows ITS NoDefault sentinel. Once that runs (the Runner API imports it) after the real
# typing_extensions, every Generic[...] over TypeVars made by the real one (torch.fx, reached lazily via
# transformers) raises "Type parameter ... without a default follows type parameter with a default".
# Flow steps import metaflow first, so only a process that imports both in the other order (this test
# session) needs the real patch put back.
import metaflow._vendor.typing_extensions  # noqa: E402,F401

if hasattr(typing_extensions, "_collect_parameters"):
    typing._collect_parameters = typing_extensions._collect_parameters

from tests.mlflow_server import mlflow_server_uri  # noqa: E402,F401  (session-scoped fixture)


@pytest.fixture(scope="session")
def hps_cache_dir(tmp_path_factory):
    """One cache (tiny models, reference log-probs) for the whole session, isolated from the user's."""
    path = tmp_path_factory.mktemp("hps_cache")
    os.environ["HPS_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared CPU: one intra-op thread is several times faster than two that contend.
    A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """A 1-layer, 32-wide Llama with its own tokenizer (tiny builder): fast enough to generate and score with
    in unit tests of steps that need a causal LM and a reward model (its random score head)."""
    from hps_core.config.schema import TinyModelConfig
    from hps_core.models.loading import build_tiny_model

    tiny = TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=96)
    corpus = ["User: how do I bake bread?\nAssistant: mix flour, water and yeast, then bake it."] * 4
    return str(build_tiny_model(corpus, tiny, cache_dir=tmp_path_factory.mktemp("micro")))


# Two tiers (README, "Set up, run, test"): `python -m pytest -q` runs the fast one (unit tests and one small
# end-to-end flow, a few minutes on 2 cores); `--run-slow` adds every test marked `slow` or `flow` (flow runs,
# servers, torchrun, the real model), which is what CI runs. Tests named on the command line
# (`pytest tests/test_distributed.py`, `pytest tests/x.py::test_y`) run whatever their tier.
def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the slow tier (tests marked slow or flow): what CI runs")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or _named_on_command_line(config):
        return
    fast, slow = [], []
    for item in items:
        (slow if item.get_closest_marker("slow") or item.get_closest_marker("flow") else fast).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = fast


def _named_on_command_line(config) -> bool:
    """Whether the user named test files or nodes (not just the default ``testpaths`` or the tests folder)."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    return any(os.path.abspath(arg.split("::")[0]) != tests_dir for arg in config.option.file_or_dir)


def pytest_report_header(config):
    if not config.getoption("--run-slow") and not _named_on_command_line(config):
        return "fast tier: tests marked slow or flow are deselected (--run-slow runs everything, as CI does)"
