import json

import numpy as np
import pytest
from flax import nnx

from detector.artifact import ArtifactError, TrainedModel, load, save
from detector.model import VAE, ModelConfig
from detector.preprocessing import Scaler
from detector.threshold import Persistence, Threshold

SENSORS = ("pump_a", "pump_b", "pump_c")


@pytest.fixture
def model():
    config = ModelConfig(window=6, hidden=(8,), latent=2)
    return TrainedModel(SENSORS, config, Scaler(np.array([1, 2, 3], np.float32), np.array([1, 1, 2], np.float32)),
                        VAE(config, 3, rngs=nnx.Rngs(3)), Threshold(2.5, "pot", {"risk": 1e-3}),
                        Persistence(2, 4), metadata={"training": {"rows": 10}})


@pytest.fixture
def saved(model, tmp_path):
    return save(model, tmp_path / "model", extra={"training_report.json": b"{}"})


def test_round_trip_scores_bit_identical(model, saved, rng):
    raw = rng.normal(size=(50, 3)).astype(np.float32)
    before = model.scorer().score_series(raw)
    loaded = load(saved)
    after = loaded.scorer().score_series(raw)
    assert before.score.tobytes() == after.score.tobytes()
    assert before.contributions.tobytes() == after.contributions.tobytes()
    assert loaded.sensors == SENSORS and loaded.persistence == Persistence(2, 4)
    assert loaded.threshold == model.threshold and loaded.version == model.version != ""


def test_config_records_what_the_issue_asks(saved):
    config = json.loads((saved / "config.json").read_text())
    for key in ("schema_version", "sensors", "window", "model", "scaler", "threshold", "libraries", "created_at",
                "training"):
        assert key in config
    assert config["threshold"]["method"] == "pot" and config["libraries"]["jax"]


def test_refuses_existing_directory(model, saved):
    with pytest.raises(ArtifactError, match="already exists"):
        save(model, saved)


def test_corrupted_params_are_refused(saved):
    data = bytearray((saved / "params.msgpack").read_bytes())
    data[100] ^= 0xFF
    (saved / "params.msgpack").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="params.msgpack: SHA-256 does not match"):
        load(saved)


def test_truncated_params_are_refused(saved):
    path = saved / "params.msgpack"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ArtifactError, match="corrupted or was modified"):
        load(saved)


def test_tampered_report_is_refused(saved):
    (saved / "training_report.json").write_text('{"x": 1}')
    with pytest.raises(ArtifactError, match="training_report.json"):
        load(saved)


def test_missing_manifest(saved):
    (saved / "SHA256SUMS").unlink()
    with pytest.raises(ArtifactError, match="no SHA256SUMS"):
        load(saved)


def _rewrite_config(path, change):
    """Edit config.json and re-sign it, as a newer Vigil (or a careless user) would."""
    import hashlib

    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))
    lines = []
    for line in (path / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        if name == "config.json":
            digest = hashlib.sha256((path / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}\n")
    (path / "SHA256SUMS").write_text("".join(lines))


def test_newer_schema_is_refused(saved):
    _rewrite_config(saved, lambda c: c.update(schema_version=99))
    with pytest.raises(ArtifactError, match="schema version 99 is newer"):
        load(saved)


def test_architecture_mismatch_is_refused(saved):
    _rewrite_config(saved, lambda c: c["model"].update(latent=3))
    with pytest.raises(ArtifactError, match="do not match the architecture"):
        load(saved)


def test_missing_key_is_named(saved):
    _rewrite_config(saved, lambda c: c.pop("scaler"))
    with pytest.raises(ArtifactError, match="missing key 'scaler'"):
        load(saved)


def test_not_a_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not a model directory"):
        load(tmp_path / "nope")


def test_sampling_interval_round_trip(model, tmp_path):
    model.interval_seconds = 300.0
    assert load(save(model, tmp_path / "m")).interval_seconds == 300.0


def test_models_saved_before_the_interval_load_as_unknown(saved):
    _rewrite_config(saved, lambda c: c.pop("interval_seconds"))
    assert load(saved).interval_seconds is None


@pytest.mark.parametrize("bad", [0, -5.0, "5s", True])
def test_bad_interval_is_refused(saved, bad):
    _rewrite_config(saved, lambda c: c.update(interval_seconds=bad))
    with pytest.raises(ArtifactError, match="interval_seconds .* is not a number of seconds > 0"):
        load(saved)


def test_changed_interval_is_a_warning_on_promotion(model, tmp_path):
    from detector.artifact import describe_change

    model.interval_seconds = 1.0
    serving = load(save(model, tmp_path / "a"))
    model.interval_seconds, model.version = 60.0, ""
    notes = describe_change(serving, load(save(model, tmp_path / "b")))
    assert any(level == "warning" and "1 min apart" in text and "1 s" in text for level, text in notes)
