"""hps_core.tracking against a real MLflow server over HTTP (and once against the local sqlite default)."""

from __future__ import annotations

import math
import socket
import uuid
from pathlib import Path

import pytest

from hps_core.tracking import base as tracking_base
from hps_core.tracking import registration as tracking_registration
from hps_core.tracking.base import (
    PARENT_RUN_TAG,
    RegisteredVersion,
    TrackingError,
    flatten_params,
    resolve_tracking_uri,
)
from hps_core.tracking.mlflow_tracker import MlflowTracker
from hps_core.tracking.null import NullTracker

pytestmark = pytest.mark.slow  # slow tier (--run-slow): a real MLflow server

mlflow = pytest.importorskip("mlflow")

METRICS = {"eval.reward_margin": 0.25, "eval.win_rate_vs_sft": 0.6, "eval.harm_rate": 0.0}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No network but loopback: logging, registering and loading a model must not reach out."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    real_connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                "127.0.0.1", "::1", "localhost"):
            raise OSError(f"test blocks network access to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a trained WordLevel tokenizer, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["the cat sat on the mat", "a dog ran in the park", "hello world how are you"],
        trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "<s>", "</s>"]),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    assert (out / "model.safetensors").is_file()
    return out


@pytest.fixture()
def tracker(mlflow_server_uri) -> MlflowTracker:
    return MlflowTracker(mlflow_server_uri, experiment_name="test-tracking")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_resolve_tracking_uri_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_tracking_uri(tmp_path) == "http://mlflow.example:5000"


def test_a_kubernetes_pod_without_a_tracking_uri_is_refused(monkeypatch):
    # A local store in a pod is a fresh database per step: the run's lineage would be scattered and lost.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("METAFLOW_KUBERNETES_WORKLOAD", "1")
    with pytest.raises(TrackingError, match="METAFLOW_KUBERNETES_SECRETS"):
        resolve_tracking_uri()


def test_flatten_params_dotted_stringified_truncated():
    flat = flatten_params({"train": {"lr": 1e-5, "sched": {"name": "cosine"}}, "seed": 3,
                           "long": "x" * 7000, "empty": {}, "k" * 300: 1})
    assert flat["train.lr"] == "1e-05" and flat["train.sched.name"] == "cosine"
    assert flat["seed"] == "3" and flat["empty"] == "{}"
    assert len(flat["long"]) == tracking_base.MAX_PARAM_LEN
    assert "k" * tracking_base.MAX_KEY_LEN in flat


def test_parent_and_child_runs(tracker):
    client = mlflow.MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    parent = tracker.create_parent_run("hps-flow", tags={"metaflow.run_id": "HPSFlow/1"})
    assert client.get_run(parent).info.status == "RUNNING"

    with tracker.child_run(parent, "train_hps", tags={"step": "train_hps"}) as child:
        params = {f"p{i}": {"nested": i} for i in range(150)}  # > one log_batch of params
        tracker.log_params(child, {"config": {"gamma": 2.0, "loss": "hps"}, **params})
        tracker.log_metrics(child, {"loss": 0.5, "nan_metric": float("nan")}, step=3)
        tracker.set_tags(child, {"git_commit": "abc123"})
        tracker.log_dict(child, {"a": 1}, "config/resolved.json")
        tracker.log_text(child, "hello", "notes/readme.txt")
    run = client.get_run(child)
    assert run.info.status == "FINISHED"
    assert run.data.tags[PARENT_RUN_TAG] == parent and run.data.tags["git_commit"] == "abc123"
    assert run.data.params["config.gamma"] == "2.0" and run.data.params["p149.nested"] == "149"
    assert run.data.metrics["loss"] == 0.5 and math.isnan(run.data.metrics["nan_metric"])
    assert client.get_metric_history(child, "loss")[0].step == 3
    files = {f.path for f in client.list_artifacts(child, "config")}
    assert "config/resolved.json" in files
    assert mlflow.artifacts.load_dict(f"runs:/{child}/config/resolved.json") == {"a": 1}

    with pytest.raises(RuntimeError, match="boom"):
        with tracker.child_run(parent, "evaluate") as failed:
            raise RuntimeError("boom")
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(failed).data.tags[PARENT_RUN_TAG] == parent

    tracker.finish_run(parent)
    assert client.get_run(parent).info.status == "FINISHED"


def test_log_figure_and_artifact(tracker, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = tracker.create_parent_run("artifacts")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    tracker.log_figure(run, fig, "plots/margin.png")
    plt.close(fig)
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    tracker.log_artifact(run, tmp_path / "table.csv", "eval")
    client = mlflow.MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    assert {f.path for f in client.list_artifacts(run, "plots")} == {"plots/margin.png"}
    assert {f.path for f in client.list_artifacts(run, "eval")} == {"eval/table.csv"}
    tracker.finish_run(run)


def test_register_hf_model_metrics_tags_description_and_load(tracker, tiny_model_dir):
    client = mlflow.MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    parent = tracker.create_parent_run("hps-flow")
    name = _name("hps-policy")
    with tracker.child_run(parent, "register") as run_id:
        tracker.log_params(run_id, {"train": {"gamma": 2.0}})
        rv = tracker.register_hf_model(
            run_id, tiny_model_dir, name, metrics=METRICS, description="HPS policy, tiny default.",
            tags={"metaflow.pathspec": "HPSFlow/7/register/1", "method": "hps"},
            params={"base_model": "tiny-llama"})
    assert isinstance(rv, RegisteredVersion)
    assert (rv.name, rv.version, rv.model_uri, rv.run_id) == (name, 1, f"models:/{name}/1", run_id)
    assert rv.model_id and rv.model_id.startswith("m-")

    # What the registry shows: the version's description, tags (incl. mirrored metrics), source, run.
    mv = client.get_model_version(name, "1")
    assert mv.description == "HPS policy, tiny default."
    assert mv.tags["metaflow.pathspec"] == "HPSFlow/7/register/1" and mv.tags["method"] == "hps"
    assert mv.tags["metric.eval.reward_margin"] == "0.25"
    assert mv.source == f"models:/{rv.model_id}" and mv.run_id == run_id
    assert mv.metrics is None  # MLflow 3.17 OSS: ModelVersion carries no metrics over REST

    # The logged model behind the version holds the metrics and params; the run has them too.
    lm = client.get_logged_model(rv.model_id)
    assert {m.key: m.value for m in lm.metrics} == METRICS
    assert lm.params["base_model"] == "tiny-llama"
    assert str(lm.status) == "READY" and lm.source_run_id == run_id
    assert '"version": "1"' in lm.tags["mlflow.modelVersions"]
    assert client.get_run(run_id).data.metrics["eval.reward_margin"] == 0.25

    # The HF directory is inside the model at a fixed place; it loads back and generates, offline.
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1"))
    assert (local / "artifacts" / tracking_registration.HF_ARTIFACT / "model.safetensors").is_file()
    assert not list(local.rglob("*.pkl"))  # models from code: no pickled python model
    assert (local / "code" / tracking_registration.BUNDLED_CHAT_MODULE).is_file()  # the prompt renderer travels with it
    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    out = model.predict(["the cat sat", "hello world"], params={"max_new_tokens": 3})
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(s, str) for s in out)
    import pandas as pd

    assert len(model.predict(pd.DataFrame({"prompt": ["a dog"]}))) == 1

    # Aliases
    assert tracker.get_version_by_alias(name, "champion") is None
    tracker.set_alias(name, "champion", rv.version)
    got = tracker.get_version_by_alias(name, "champion")
    assert got == RegisteredVersion(name, 1, f"models:/{name}/1", rv.model_id, run_id)
    assert tracker.get_version_by_alias(_name("no-such-model"), "champion") is None
    tracker.finish_run(parent)


def test_pickle_only_dir_refused(tracker, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    run = tracker.create_parent_run("pickle")
    name = _name("pickled")
    with pytest.raises(ValueError, match=r"no \*\.safetensors.*pytorch_model\.bin"):
        tracker.register_hf_model(run, tmp_path, name, metrics={}, tags={}, description="")
    with pytest.raises(ValueError, match="safetensors"):
        NullTracker().register_hf_model("r", tmp_path, name, metrics={}, tags={}, description="")
    (tmp_path / "model.safetensors").write_bytes(b"")  # weights plus a pickle: still refused
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "optimizer.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"pickle files \(ckpt/optimizer\.pt, pytorch_model\.bin\)"):
        tracker.register_hf_model(run, tmp_path, name, metrics={}, tags={}, description="")
    client = mlflow.MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    assert not client.search_registered_models(filter_string=f"name = '{name}'")


def test_failed_registration_leaves_no_version(tracker, tiny_model_dir, monkeypatch):
    client = mlflow.MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    run = tracker.create_parent_run("half")
    name = _name("half")

    def broken(*args, **kwargs):
        raise RuntimeError("registry went away")

    monkeypatch.setattr(tracker.client, "set_logged_model_tags", broken)  # after the version exists
    with pytest.raises(TrackingError, match=tracker.tracking_uri.replace(".", r"\.")):
        tracker.register_hf_model(run, tiny_model_dir, name, metrics=METRICS, tags={}, description="")
    assert not client.search_registered_models(filter_string=f"name = '{name}'")
    assert not client.search_model_versions(f"name = '{name}'")
    exp_id = tracker.experiment_id
    assert not [m for m in client.search_logged_models([exp_id]) if m.name == name]


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        MlflowTracker("http://127.0.0.1:9", experiment_name="x")


def test_http_retries_are_bounded_unless_the_user_set_them():
    """MLflow's client defaults (7 retries, 120 s each) become 5 retries, backoff factor 2, 60 s; a value
    the user set stays. The documented wait before a refused call fails, derived by hand from urllib3's
    rule (no sleep after the first error, then factor * 2^(n-1)): 0 + 4 + 8 + 16 + 32 = 60 s, jitter aside."""
    from urllib3.util.retry import Retry

    from hps_core.tracking.mlflow_tracker import HTTP_BOUNDS, bound_http_retries

    assert bound_http_retries({}) == HTTP_BOUNDS
    assert bound_http_retries({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"})["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    retry, slept = Retry(total=int(HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]),
                         backoff_factor=int(HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])), []
    for _ in range(retry.total):
        retry = retry.increment(method="GET", url="/", error=ConnectionRefusedError())
        slept.append(retry.get_backoff_time())
    assert slept == [0, 4, 8, 16, 32]


def test_an_outage_longer_than_the_retries_fails_the_call_naming_the_server(mlflow_server_uri, monkeypatch):
    """The server goes away after the tracker connected: a metric write fails with a TrackingError that
    names the URI once the (here shortened: 2 retries, factor 1) retries are spent, instead of hanging."""
    import time
    from urllib.parse import urlparse

    from tests.tcp_proxy import SwitchableProxy

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    target = urlparse(mlflow_server_uri)
    proxy = SwitchableProxy(target.hostname, target.port)
    proxy.up()
    tracker = MlflowTracker(proxy.url, experiment_name="test-outage")
    with tracker.child_run("", _name("outage")) as run_id:
        tracker.log_metrics(run_id, {"loss": 1.0}, step=1)
        proxy.down()
        started = time.monotonic()
        with pytest.raises(TrackingError, match=rf"MLflow at {proxy.url}: could not log metrics"):
            tracker.log_metrics(run_id, {"loss": 0.5}, step=2)
        waited = time.monotonic() - started
        proxy.up()
    # sleeps 0 + 2 s (+ jitter up to 1 s each) on refused connections: far below MLflow's default minutes
    assert waited < 30, waited
    history = tracker.client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0)]


def test_null_tracker_accepts_every_call(tiny_model_dir):
    t = NullTracker()
    parent = t.create_parent_run("flow", tags={"a": 1})
    with t.child_run(parent, "step", tags={"b": 2}) as child:
        t.log_params(child, {"a": {"b": 1}})
        t.log_metrics(child, {"m": 1.0}, step=1)
        t.log_artifact(child, "/nonexistent", "x")
        t.log_dict(child, {}, "d.json")
        t.log_figure(child, object(), "f.png")
        t.log_text(child, "t", "t.txt")
        t.set_tags(child, {"c": 3})
        rv = t.register_hf_model(child, tiny_model_dir, "m", metrics={"x": 1.0}, tags={},
                                 description="d", params={"p": 1})
    t.finish_run(parent, status="FAILED")
    assert rv.version == 1 and rv.model_uri == "models:/m/1"
    assert t.get_version_by_alias("m", "champion") is None
    t.set_alias("m", "champion", 1)
    assert t.get_version_by_alias("m", "champion").version == 1
    with pytest.raises(ValueError):
        with t.child_run(parent, "boom"):
            raise ValueError("propagates")


def test_local_sqlite_default_registers(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(tmp_path / "store")
    (tmp_path / "store").mkdir()
    tracker = MlflowTracker(uri, experiment_name="local")
    run = tracker.create_parent_run("local")
    rv = tracker.register_hf_model(run, tiny_model_dir, "local-policy", metrics=METRICS,
                                   tags={"method": "sft"}, description="local")
    tracker.finish_run(run)
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    assert client.get_model_version("local-policy", "1").tags["method"] == "sft"
    assert {m.key for m in client.get_logged_model(rv.model_id).metrics} == set(METRICS)
    assert (tmp_path / "store" / "mlflow.db").is_file()
    assert any((tmp_path / "store" / "mlruns").rglob("model.safetensors"))
    out = mlflow.pyfunc.load_model(rv.model_uri).predict(["the cat"], params={"max_new_tokens": 2})
    assert len(out) == 1


def test_tracking_uri_credentials_are_masked_for_storage_and_read_back_from_the_environment(monkeypatch):
    from hps_core.tracking.base import (TrackingError, live_tracking_uri, mask_uri_credentials,
                                        strip_uri_credentials)

    real = "https://pipeline:s3cret-pass@mlflow.example.org:5000/prefix"
    stored = mask_uri_credentials(real)
    assert stored == "https://pipeline:***@mlflow.example.org:5000/prefix" and "s3cret" not in stored
    assert mask_uri_credentials("https://tok123@host") == "https://***@host"  # a bare token is masked whole
    assert mask_uri_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert strip_uri_credentials(real) == "https://mlflow.example.org:5000/prefix"
    assert live_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"  # nothing to restore
    monkeypatch.setenv("MLFLOW_TRACKING_URI", real)
    assert live_tracking_uri(stored) == real  # each step re-reads the credentials from its environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://pipeline:other@elsewhere.org")
    with pytest.raises(TrackingError, match="carries credentials, which a run never stores"):
        live_tracking_uri(stored)
