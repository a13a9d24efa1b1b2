"""hps_core.tracking.checkpoint_mirror against a real MLflow server: checkpoints copied to the parent run's
artifacts, pruned to ``keep``, restored whole on an empty disk, refused when a byte differs, dropped at the
end. (The whole path, kill -9 and resume from another working directory, is in tests/test_faults_flow.py.)"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from hps_core.tracking.checkpoint_mirror import CheckpointMirror, RestoreFailed, checkpoint_mirror
from hps_core.tracking.mlflow_tracker import MlflowTracker
from hps_core.tracking.null import NullTracker

pytestmark = pytest.mark.slow  # slow tier (--run-slow): a real MLflow server


def _checkpoint(root: Path, step: int) -> Path:
    path = root / f"checkpoint-{step}"
    (path / "sub").mkdir(parents=True)
    (path / "model.safetensors").write_bytes(os.urandom(4096))
    (path / "meta.json").write_text(f'{{"step": {step}}}')
    (path / "sub" / "tokenizer.json").write_text("{}")
    return path


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture()
def mirror(mlflow_server_uri) -> CheckpointMirror:
    tracker = MlflowTracker(mlflow_server_uri, experiment_name="test-checkpoint-mirror")
    run_id = tracker.create_parent_run(f"mirror-{uuid.uuid4().hex[:8]}")
    made = checkpoint_mirror(tracker, run_id, "hps", keep=2)
    assert isinstance(made, CheckpointMirror)
    return made


def test_push_keeps_the_newest_two_and_pull_restores_the_newest_whole(mirror, tmp_path):
    local = tmp_path / "machine-a"
    written = [_checkpoint(local, step) for step in (2, 4, 6)]
    for path in written:
        mirror.push(path)
    assert sorted(mirror.tracker.list_artifacts(mirror.run_id, "checkpoints/hps")) == [
        "checkpoint-4", "checkpoint-6", "latest.json"]

    restored = mirror.pull(tmp_path / "machine-b" / "checkpoints")
    assert restored == tmp_path / "machine-b" / "checkpoints" / "checkpoint-6"
    assert _files(restored) == _files(written[-1])
    assert [p.name for p in restored.parent.iterdir()] == ["checkpoint-6"]  # no staging left behind

    mirror.drop()
    assert mirror.tracker.list_artifacts(mirror.run_id, "checkpoints/hps") == []
    assert mirror.pull(tmp_path / "machine-c") is None  # nothing uploaded: the stage starts from step 0


def test_a_copy_that_does_not_match_its_digest_is_refused(mirror, tmp_path):
    path = _checkpoint(tmp_path / "a", 2)
    mirror.push(path)
    (path / "model.safetensors").write_bytes(b"not the uploaded weights")  # the store now holds other bytes
    mirror.tracker.log_artifact(mirror.run_id, path / "model.safetensors", "checkpoints/hps/checkpoint-2")
    with pytest.raises(RestoreFailed, match=r"checkpoint-2/model\.safetensors\) is missing or does not match"):
        mirror.pull(tmp_path / "b")
    assert not (tmp_path / "b" / "checkpoint-2").exists()


def test_a_failed_upload_is_a_warning_and_keeps_the_previous_pointer(mirror, tmp_path, caplog):
    mirror.push(_checkpoint(tmp_path / "a", 2))
    gone = tmp_path / "a" / "checkpoint-4"  # pruned by the trainer before the copy started
    mirror.push(gone)
    assert "could not copy checkpoint-4" in caplog.text
    assert mirror.pull(tmp_path / "b").name == "checkpoint-2"


def test_no_mirror_without_a_tracking_server(tmp_path):
    """A local sqlite store shares the disk with the checkpoints: copying there would protect nothing."""
    local = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="local")
    assert checkpoint_mirror(local, "run", "hps") is None
    assert checkpoint_mirror(NullTracker(), "run", "hps") is None
