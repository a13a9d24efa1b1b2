"""Model sources (hps_core.models.sources, hps_core.models.gguf): what a model key may name, the checks at
``start``, the lineage of GGUF files, and the ``hps`` command. The conversion of a real GGUF file is in
tests/test_real_model.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hps_core.cli import main as hps_main
from hps_core.config.schema import PipelineConfig
from hps_core.models.gguf import GGUFImportError, converted_dir, gguf_path, is_gguf_source
from hps_core.registry.lineage import lineage_record
from hps_core.registry.lineage_walk import verify
from hps_core.models.sources import ModelSourceError, check_model_source, check_model_sources, source_kind

ROOT = Path(__file__).resolve().parent.parent


def test_source_kinds(tmp_path):
    (tmp_path / "m").mkdir()
    assert [source_kind(s) for s in ("", "tiny", "gguf:x.bin", "a/b.GGUF", str(tmp_path / "m"), "./missing",
                                     "Qwen/Qwen2.5-0.5B-Instruct")] == ["", "tiny", "gguf", "gguf", "dir", "dir", "hub"]
    assert is_gguf_source("gguf:~/m.bin") and gguf_path("gguf:~/m.bin") == Path.home() / "m.bin"


def test_gguf_path_inside_an_installed_package(tmp_path, monkeypatch):
    """A relative path that does not exist is looked up in the folder of the installed package it starts
    with (models shipped in wheels); an existing relative path wins; no package, no lookup."""
    package = tmp_path / "site" / "some_model_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    assert gguf_path("gguf:some_model_pkg/m.gguf") == package / "m.gguf"
    (tmp_path / "some_model_pkg").mkdir()
    (tmp_path / "some_model_pkg" / "m.gguf").write_bytes(b"local")
    assert gguf_path("gguf:some_model_pkg/m.gguf") == Path("some_model_pkg/m.gguf")
    assert gguf_path("gguf:no_such_pkg_xyz/m.gguf") == Path("no_such_pkg_xyz/m.gguf")


def test_gguf_source_is_hashed_into_lineage_and_verified(tmp_path):
    """A GGUF base: its sha256 is a lineage tag at start, a model file in the lineage record, and --verify
    re-hashes it (ok, then MISMATCH once the bytes change)."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    digest = hashlib.sha256(b"GGUF fake weights").hexdigest()
    cfg = PipelineConfig.from_dict({"model": {"base": f"gguf:{gguf}"}})
    tags = check_model_sources(cfg)
    assert tags == {"base_model_source_kind": "gguf", "base_model_sha256": digest}
    record = lineage_record({**tags, "base_model": f"gguf:{gguf}"})
    assert record["model_files"] == [{"role": "base_model", "path": str(gguf), "sha256": digest, "bytes": 17}]
    chain = {"raw_files": [], "model_files": record["model_files"], "canonical": {}}
    assert [c["status"] for c in verify(chain)] == ["ok"]
    gguf.write_bytes(b"other bytes")
    assert [c["status"] for c in verify(chain)] == ["MISMATCH"]


@pytest.mark.parametrize("key,section", [("model.base", "model"), ("reward_model.path", "reward_model")])
def test_missing_sources_fail_at_start_naming_key_value_and_remedy(key, section, tmp_path):
    field = key.split(".")[1]
    for value, expected in ((f"gguf:{tmp_path / 'nope.gguf'}", "does not exist"),
                            (str(tmp_path), "holds no config.json"),
                            (str(tmp_path / "absent"), "no such directory")):
        with pytest.raises(ModelSourceError) as err:
            check_model_sources(PipelineConfig.from_dict({section: {field: value}}))
        assert key in str(err.value) and expected in str(err.value)


def test_hub_id_not_reachable_names_key_id_and_remedies(monkeypatch, tmp_path):
    """Offline (HF_HUB_OFFLINE=1) with an empty hub cache: the hub id cannot be had, and the error says so
    at once with the key, the id and the ways out."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # honoured: an empty cache
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelSourceError) as err:
        check_model_source("model.base", "someone/some-model", tag="base_model")
    message = str(err.value)
    for part in ("model.base", "'someone/some-model'", "HF_HUB_OFFLINE=1", "local Hugging", "gguf:<path>"):
        assert part in message, message


def test_hub_id_found_in_the_local_cache_passes_offline(monkeypatch, tmp_path):
    """HF_HOME is honoured: a model in that cache is usable offline (nothing fetched)."""
    cache = tmp_path / "hf" / "hub"
    snapshot = cache / "models--someone--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--someone--cached" / "refs").mkdir()
    (cache / "models--someone--cached" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert check_model_source("model.base", "someone/cached", tag="base_model") == {"base_model_source_kind": "hub"}


def test_flow_env_leaves_hub_access_to_the_user():
    """The flows no longer force HF_HUB_OFFLINE=1: a hub id in the config is fetched unless the user says not."""
    text = (ROOT / "flows" / "flow_env.py").read_text()
    assert 'setdefault("HF_HUB_OFFLINE"' not in text and "HF_HUB_OFFLINE" in text


def test_hub_id_fails_the_flow_at_start(tmp_path, hps_cache_dir):
    """The whole flow: a hub id that cannot be had stops it in `start`, before validate or any training."""
    from metaflow import Runner

    config = tmp_path / "hub.toml"
    config.write_text('[model]\nbase = "someone/not-cached-anywhere"\n')
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "HPS_CACHE_DIR": str(hps_cache_dir)}
    with Runner(str(ROOT / "flows" / "hps_flow.py"), cwd=str(tmp_path), env=env, show_output=False,
                config=[("config", str(config))]).run() as running:
        status, run, log = running.status, running.run, running.stdout + running.stderr
    assert status == "failed"
    assert [s.id for s in run] == ["start"]
    assert "model.base = 'someone/not-cached-anywhere' is a hub id that cannot be found" in log


def test_converted_dir_refuses_a_missing_file_and_a_non_gguf_file(tmp_path):
    with pytest.raises(GGUFImportError, match="does not exist"):
        converted_dir(f"gguf:{tmp_path / 'absent.gguf'}", tmp_path / "cache")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(GGUFImportError, match="could not read"):
        converted_dir(str(junk), tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("config.json"))  # nothing half-written is left


def test_hps_command(tmp_path, capsys):
    assert hps_main(["import-gguf", str(tmp_path / "absent.gguf"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert hps_main([]) == 2 and "import-gguf" in capsys.readouterr().err
    assert hps_main(["lineage", "not-a-uri"]) == 2  # the lineage walk's own error exit
