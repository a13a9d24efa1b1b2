"""Security (issue 8.3): safetensors-only weights and no shipped code unless the config opts in, per model;
secrets masked by name and by value at every place text leaves the process; servers bind 127.0.0.1.

The end-to-end proof that no secret reaches anything a flow run writes is tests/test_secrets_scan.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch

from hps_core.config.building import ConfigError
from hps_core.config.schema import ModelConfig, PipelineConfig, RewardModelConfig, SFTConfig, TinyModelConfig
from hps_core.models.loading import OPT_IN_KEYS, ModelLoadError, build_tiny_model, load_causal_lm, load_reward_model
from hps_core.common.redaction import MASK, MIN_SECRET_LEN, is_secret_name, redact_mapping, scrub_text, secret_values

ROOT = Path(__file__).resolve().parent.parent
SMALL = TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1)
CORPUS = ["User: how do I bake bread?\nAssistant:", " Mix flour, water and yeast, then bake it.",
          " I cannot help with that."] * 5
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- the redaction rules
@pytest.mark.parametrize("name", [
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN", "MY_API_KEY", "MY_APIKEY", "apiKey", "HFToken", "model.hf_token", "db-password",
    "client_secret", "secrets.s3", "wandb.api_key", "GPG_KEY", "pad_token_id",
])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "max_new_tokens", "max_prompt_tokens", "keys", "keyboard", "tokenizer", "TOKENIZERS_PARALLELISM", "hps.beta",
    "passage", "PWD", "monkeys", "sft/tokens_per_s", "KEYCLOAK_URL", "register.champion_alias",
    "model.tiny.num_key_value_heads",
])
def test_names_that_are_not_secret(name):
    assert not is_secret_name(name)


def test_secret_values_from_names_and_url_passwords_with_a_length_floor():
    env = {"HF_TOKEN": "hf_abcdefgh12345", "MY_API_KEY": "short", "HOME": "/root/not-a-secret",
           "MLFLOW_TRACKING_URI": "https://alice:s3cr3t-pa55word@mlflow.example.com", "MAX_TOKENS": "1234567890"}
    assert secret_values(env) == ["hf_abcdefgh12345", "s3cr3t-pa55word"]  # longest first
    assert len("short") < MIN_SECRET_LEN  # too short to scrub by value: "KEY=1" must not mask every "1"


def test_scrub_text_masks_values_and_url_passwords():
    text = "token hf_abcdefgh12345 at https://alice:pw@host/x and https://host:5000/api"
    assert scrub_text(text, ["hf_abcdefgh12345"]) == "token *** at https://alice:***@host/x and https://host:5000/api"


def test_redact_mapping_masks_secret_keys_and_scrubs_values_everywhere(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    out = redact_mapping({"model": {"hf_token": "anything", "base": "tiny", "max_new_tokens": 40},
                          "note": "uses tok-0123456789", "list": ["a tok-0123456789", 3], "empty_key": ""})
    assert out == {"model": {"hf_token": MASK, "base": "tiny", "max_new_tokens": 40},
                   "note": f"uses {MASK}", "list": [f"a {MASK}", 3], "empty_key": ""}


def test_redact_value_per_type_and_the_empty_values_of_secret_names():
    """A secret name masks any non-empty value (a number too) but keeps an empty one, so a reader sees the
    key was unset; strings inside tuples and lists are scrubbed and keep their container type; a secret name
    inside a nested mapping is masked there; other types pass unchanged."""
    from hps_core.common.redaction import redact_value

    secrets = ["tok-0123456789"]
    assert redact_value("api_token", 12345678, secrets) == MASK
    assert [redact_value("api_token", v, secrets) for v in (None, "", {}, [])] == [None, "", {}, []]
    assert redact_value("note", ("x tok-0123456789", 2), secrets) == (f"x {MASK}", 2)
    assert redact_value("note", ["tok-0123456789"], secrets) == [MASK]
    assert redact_value("cfg", {"inner": {"password": "p", "n": 1.5}}, secrets) == {"inner": {"password": MASK, "n": 1.5}}
    assert redact_value("n", 1.5, secrets) == 1.5 and redact_value("flag", True, secrets) is True


def test_scrubbing_stream_masks_text_and_passes_the_rest_through(monkeypatch):
    """In process (the subprocess tests below cover real stdout): text is scrubbed and its own length is
    returned (what print expects); bytes go to the wrapped stream untouched; attributes the wrapper does
    not define come from the stream; installing twice wraps once; no secrets, no wrapping."""
    import io
    import sys

    from hps_core.common.redaction import ScrubbingStream, install_output_scrubbing

    inner = io.StringIO()
    stream = ScrubbingStream(inner, ["tok-0123456789"])
    assert stream.write("a tok-0123456789 b") == len("a tok-0123456789 b")
    assert inner.getvalue() == f"a {MASK} b" and stream.writable()
    assert stream.getvalue() == f"a {MASK} b"  # __getattr__: StringIO's own method
    with pytest.raises(TypeError):
        stream.write(b"bytes")  # refused by the wrapped text stream, as it would be without the wrapper

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    assert install_output_scrubbing() and install_output_scrubbing()
    assert isinstance(sys.stdout, ScrubbingStream) and sys.stdout._stream is out and sys.stderr._stream is err
    print("uses tok-0123456789")
    sys.stderr.write("tok-0123456789!")
    assert out.getvalue() == f"uses {MASK}\n" and err.getvalue() == f"{MASK}!"

    monkeypatch.setattr(sys, "stdout", out)
    for name in [k for k in os.environ if is_secret_name(k)]:
        monkeypatch.delenv(name)
    assert install_output_scrubbing() is False and sys.stdout is out


def test_output_scrubbing_covers_print_logging_click_and_tracebacks():
    """A process with a secret in its environment: nothing it writes through Python carries the value."""
    secret = f"canary-{uuid.uuid4().hex}"
    code = (
        "import logging, click\n"
        "from hps_core.common.redaction import install_output_scrubbing\n"
        "assert install_output_scrubbing()\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"print('print {secret}')\n"
        f"logging.getLogger('x').info('log {secret}')\n"
        f"click.echo('click {secret}')\n"
        f"click.secho('click-err {secret}', err=True, fg='red')\n"
        f"raise RuntimeError('boom {secret}')\n"
    )
    env = {**os.environ, "SOME_SERVICE_TOKEN": secret}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "RuntimeError: boom ***" in out, out
    for what in ("print ***", "log ***", "click ***", "click-err ***"):
        assert what in out, out
    assert secret not in out


def test_output_scrubbing_is_off_without_secrets():
    code = "import sys; from hps_core.common.redaction import install_output_scrubbing as i; print(i(), type(sys.stdout).__name__)"
    env = {k: v for k, v in os.environ.items() if not is_secret_name(k)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "TextIOWrapper"]


# --------------------------------------------------------------------------- the choke points in tracking
@pytest.mark.slow  # a real MLflow server
def test_tracker_masks_params_tags_text_dict_files_and_model_cards(mlflow_server_uri, monkeypatch, tmp_path):
    """Every way the tracker sends text to MLflow, against a real server, read back through the API."""
    from mlflow import MlflowClient

    from hps_core.tracking.mlflow_tracker import MlflowTracker

    secret = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("MY_SERVICE_API_KEY", secret)
    tracker = MlflowTracker(mlflow_server_uri, experiment_name="test-security")
    run_id = tracker.create_parent_run("secrets", tags={"note": f"made with {secret}", "auth_token": "abc"})
    tracker.log_params(run_id, {"model": {"hf_token": "hf_plain", "base": "tiny"}, "data": {"source": f"s3://b/{secret}"},
                                "evaluate": {"max_new_tokens": 40}})
    tracker.set_tags(run_id, {"failure": f"RuntimeError: bad {secret}"})
    tracker.log_text(run_id, f"# card\nkey {secret}\n", "card.md")
    tracker.log_dict(run_id, {"mlflow_password": "pw-plain", "paths": [f"/x/{secret}"]}, "lineage.json")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"note": secret}))
    tracker.log_artifact(run_id, report, "contracts")
    model_dir = build_tiny_model(CORPUS, SMALL, cache_dir=tmp_path / "models")
    version = tracker.register_hf_model(run_id, model_dir, f"sec-{uuid.uuid4().hex[:8]}", metrics={"m": 1.0},
                                        tags={"base_model": secret, "hf_token": "x"},
                                        description=f"card of a model trained with {secret}")
    tracker.finish_run(run_id)

    client = MlflowClient(mlflow_server_uri, registry_uri=mlflow_server_uri)
    data = client.get_run(run_id).data
    assert data.params["model.hf_token"] == MASK and data.params["model.base"] == "tiny"
    assert data.params["data.source"] == f"s3://b/{MASK}" and data.params["evaluate.max_new_tokens"] == "40"
    assert data.tags["note"] == f"made with {MASK}" and data.tags["auth_token"] == MASK
    assert data.tags["failure"] == f"RuntimeError: bad {MASK}"
    texts = {p: Path(client.download_artifacts(run_id, p, str(tmp_path / "dl"))).read_text()
             for p in ("card.md", "lineage.json", "contracts/report.json")}
    assert texts["card.md"] == f"# card\nkey {MASK}\n"
    assert json.loads(texts["lineage.json"]) == {"mlflow_password": MASK, "paths": [f"/x/{MASK}"]}
    assert json.loads(texts["contracts/report.json"]) == {"note": MASK}
    assert secret in report.read_text()  # the local file is left alone; only the upload is masked
    mv = client.get_model_version(version.name, str(version.version))
    assert mv.description == f"card of a model trained with {MASK}"
    assert mv.tags["base_model"] == MASK and mv.tags["hf_token"] == MASK
    logged = client.get_logged_model(version.model_id)
    assert secret not in json.dumps({**logged.tags, **logged.params})


# --------------------------------------------------------------------------- pickle weights: refused unless opted in
@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory):
    """A tiny model directory whose weights are a pickle (pytorch_model.bin) only, and the original weights."""
    root = tmp_path_factory.mktemp("pickled")
    src = build_tiny_model(CORPUS, SMALL, seed=0, cache_dir=root / "models")
    model, _ = load_causal_lm(str(src), device=CPU)
    out = root / "pickled"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    return out, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("config_key", list(OPT_IN_KEYS))
def test_pickle_only_checkpoint_is_refused_naming_the_opt_in(pickled_model, config_key):
    path, _ = pickled_model
    loader = load_causal_lm if config_key == "model.base" else load_reward_model
    with pytest.raises(ModelLoadError) as err:
        loader(str(path), device=CPU, config_key=config_key)
    message = str(err.value)
    assert str(path) in message and "only pickle weights" in message  # what, where
    assert f"{OPT_IN_KEYS[config_key][1]} = true" in message and "safetensors" in message  # how to fix


def test_pickle_opt_in_loads_the_same_weights(pickled_model):
    path, weights = pickled_model
    model, _ = load_causal_lm(str(path), device=CPU, allow_pickle=True)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, weights[name])


def test_base_model_opt_in_is_read_from_the_config_by_sft(pickled_model, tmp_path):
    """model.allow_pickle_weights reaches the SFT loader: refused by default, trained with the opt-in, and
    the trained model is saved as safetensors (the pickle never travels further)."""
    from hps_core.train.sft import train_sft

    path, _ = pickled_model
    groups = pd.DataFrame({"prompt": ["how do I bake bread?"] * 2, "split": ["train", "train"],
                           "responses": [["Mix flour, water and yeast.", "I cannot help with that."]] * 2})
    stage = SFTConfig(epochs=1, batch_size=4, log_every=1, checkpoint_every=0, warmup_ratio=0.0)
    with pytest.raises(ModelLoadError, match="model.allow_pickle_weights = true"):
        train_sft(str(path), groups, ModelConfig(max_prompt_tokens=16, max_length=48), stage, tmp_path / "refused")
    train_sft(str(path), groups, ModelConfig(max_prompt_tokens=16, max_length=48, allow_pickle_weights=True), stage,
              tmp_path / "sft")
    assert (tmp_path / "sft" / "model.safetensors").is_file() and not list((tmp_path / "sft").glob("*.bin"))


def test_reward_model_and_judge_opt_ins_are_their_own(pickled_model):
    """The reward model's and the harm judge's opt-ins load only their own model; the base model's does not."""
    from hps_core.evaluate.harm_judge import make_harm_judge
    from hps_core.models.reward import RewardScorer

    path = str(pickled_model[0])
    base_opt_in = ModelConfig(allow_pickle_weights=True)
    with pytest.raises(ModelLoadError, match="reward_model.allow_pickle_weights = true"):
        RewardScorer.load(path, base_opt_in, reward_cfg=RewardModelConfig(path=path))
    scorer = RewardScorer.load(path, ModelConfig(), reward_cfg=RewardModelConfig(path=path, allow_pickle_weights=True))
    assert scorer.model is not None
    with pytest.raises(ModelLoadError, match="evaluate.harm_judge_allow_pickle_weights = true"):
        make_harm_judge(path)
    # (the tiny model has no harmful label, so the judge itself then refuses, by label, not by weights)
    with pytest.raises(ValueError, match="harm classifier"):
        make_harm_judge(path, allow_pickle=True)


# --------------------------------------------------------------------------- code shipped with a model
@pytest.fixture()
def remote_code_model(tmp_path):
    """A model directory whose config asks for its own Python code; the code leaves a marker if it ever runs."""
    marker = tmp_path / "CODE_RAN"
    d = tmp_path / "custom"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "hps-test-custom", "architectures": ["CustomModel"],
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomModel",
                     "AutoModelForSequenceClassification": "modeling_custom.CustomModel"}}))
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    (d / "configuration_custom.py").write_text(code)
    (d / "modeling_custom.py").write_text(code)
    (d / "model.safetensors").write_bytes(b"")
    return d, marker


@pytest.mark.parametrize("config_key", list(OPT_IN_KEYS))
def test_remote_code_is_not_run_without_the_opt_in(remote_code_model, config_key):
    path, marker = remote_code_model
    loader = load_causal_lm if config_key == "model.base" else load_reward_model
    with pytest.raises(ModelLoadError) as err:
        loader(str(path), device=CPU, config_key=config_key)
    assert f"{OPT_IN_KEYS[config_key][0]} = true" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


def test_opt_ins_default_off_and_exist_per_model():
    cfg = PipelineConfig()
    assert not (cfg.model.trust_remote_code or cfg.model.allow_pickle_weights)
    assert not (cfg.reward_model.trust_remote_code or cfg.reward_model.allow_pickle_weights)
    assert not (cfg.evaluate.harm_judge_trust_remote_code or cfg.evaluate.harm_judge_allow_pickle_weights)
    opted = PipelineConfig.from_dict({"reward_model": {"path": "org/rm", "trust_remote_code": True},
                                      "evaluate": {"harm_judge": "org/judge", "harm_judge_allow_pickle_weights": True}})
    assert opted.reward_model.trust_remote_code and opted.evaluate.harm_judge_allow_pickle_weights
    assert not opted.model.trust_remote_code  # one model's opt-in is not another's
    with pytest.raises(ConfigError, match="reward_model.trust_remote_code = true, but reward_model.path names no model"):
        PipelineConfig.from_dict({"reward_model": {"trust_remote_code": True}})


# --------------------------------------------------------------------------- servers bind 127.0.0.1
def _fake_mlflow(tmp_path: Path) -> dict[str, str]:
    """A PATH whose `mlflow` prints its arguments instead of starting a server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mlflow"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}


def test_mlflow_server_script_binds_loopback_by_default(tmp_path):
    script = ROOT / "infra" / "mlflow_server.sh"
    env = _fake_mlflow(tmp_path)
    args = subprocess.run(["bash", str(script), str(tmp_path / "store")], env=env, capture_output=True, text=True,
                          check=True).stdout.split()
    assert args[args.index("--host") + 1] == "127.0.0.1"
    opened = subprocess.run(["bash", str(script), str(tmp_path / "store")], env={**env, "HOST": "0.0.0.0"},
                            capture_output=True, text=True, check=True).stdout.split()
    assert opened[opened.index("--host") + 1] == "0.0.0.0"  # only when asked for explicitly


def test_no_script_or_readme_command_binds_all_interfaces():
    """Every server a project script starts or the docs document (mlflow server/ui, the test fixture) names
    127.0.0.1. (Kubernetes manifests under infra/k8s bind inside the pod, behind a ClusterIP Service.)"""
    scripts = [p for d in ("infra", "flows", "tests", "benchmarks", "hps_core") for p in (ROOT / d).rglob("*")
               if p.suffix in (".sh", ".py") and p.name != Path(__file__).name]
    host_lines = 0
    for path in [*scripts, ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert path.suffix == ".md" or "0.0.0.0" not in text, path
        for line in text.splitlines():
            if "--host" in line:
                host_lines += 1
                assert "127.0.0.1" in line, f"{path}: {line.strip()}"
    assert host_lines >= 4  # infra/mlflow_server.sh, tests/mlflow_server.py, the `mlflow ui` commands of README and docs


def test_scrubbing_stream_passes_non_text_through_and_keeps_the_secrets_it_was_installed_with(monkeypatch):
    """Whatever is not text reaches the wrapped stream as the same object; the secrets are read once, at
    install: a secret removed from the environment afterwards is still masked in what is written."""
    import io
    import sys

    from hps_core.common.redaction import ScrubbingStream, install_output_scrubbing

    class Recorder:
        def __init__(self):
            self.got = []

        def write(self, s):
            self.got.append(s)
            return 7

    inner, payload = Recorder(), b"tok-0123456789"
    assert ScrubbingStream(inner, ["tok-0123456789"]).write(payload) == 7 and inner.got == [payload]
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    assert install_output_scrubbing()
    monkeypatch.delenv("MY_SERVICE_TOKEN")
    sys.stdout.write("still tok-0123456789")
    assert out.getvalue() == f"still {MASK}"


def test_explicit_secrets_reach_nested_values(monkeypatch):
    """redact_value with its own secret list (not the environment's) scrubs them at every depth."""
    from hps_core.common.redaction import redact_value

    for name in [k for k in os.environ if is_secret_name(k)]:
        monkeypatch.delenv(name)
    secret = "only-passed-0123456789"
    value = {"a": f"x {secret}", "nested": {"b": [secret, (f"{secret}!",)]}}
    assert redact_value("cfg", value, [secret]) == {"a": f"x {MASK}", "nested": {"b": [MASK, (f"{MASK}!",)]}}
    assert redact_value("cfg", value) == value  # not in the environment: nothing to scrub


def test_key_followed_by_value_is_the_attention_layout_anywhere_in_the_name():
    """``key`` then ``value(s)`` is not a secret, also as the name's last two segments; ``key`` last is."""
    assert not is_secret_name("key_value") and not is_secret_name("KEY_VALUES") and not is_secret_name("num_key_value_heads")
    assert is_secret_name("value_key") and is_secret_name("api_key") and is_secret_name("key_valuable")


def test_scrubbing_stream_attributes_before_init_raise_instead_of_recursing():
    """A copy or unpickle creates the object without __init__: its own fields are then missing, and asking
    for them must say so (AttributeError naming the field), not recurse into the missing stream."""
    from hps_core.common.redaction import ScrubbingStream

    bare = ScrubbingStream.__new__(ScrubbingStream)
    for name in ("_stream", "_secrets"):
        with pytest.raises(AttributeError) as exc:
            getattr(bare, name)
        assert str(exc.value) == name
