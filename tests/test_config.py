import pytest

from training.config import ConfigError, load_config


def test_defaults():
    c = load_config()
    assert c.model.window == 60 and c.threshold_method == "pot" and c.persistence.k == 3


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nwindow = 30\nhidden = [64, 32]\n[training]\nepochs = 7\n[threshold]\nmethod = "quantile"\n')
    c = load_config(path, epochs=3, window=None)
    assert c.model.window == 30 and c.model.hidden == (64, 32) and c.epochs == 3
    assert c.threshold_method == "quantile" and c.threshold_options() == {"q": 0.999, "margin": 1.0}


def test_the_threshold_risk_follows_the_sampling_interval():
    c = load_config()
    assert c.window_risk(60.0) == pytest.approx(60 / 86400)  # one window a day over threshold
    assert c.window_risk(1.0) == pytest.approx(1 / 86400)
    assert c.window_risk(3600.0) == 1e-2  # hourly data: capped
    assert c.window_risk(None) == 1e-3  # windows of rows: no interval to count a day in
    assert load_config(per_day=0.1).window_risk(60.0) == pytest.approx(6 / 86400)
    assert load_config(risk=1e-4).window_risk(60.0) == 1e-4  # a risk given wins
    assert c.threshold_options(60.0)["risk"] == pytest.approx(60 / 86400)


@pytest.mark.parametrize("text, message", [
    ('[threshold]\nrisk = "high"\n', "threshold.risk: expected float"),
    ("[threshold]\nper_day = 0\n", "threshold.per_day must be > 0"),
    ("[training]\nepoks = 3\n", "training.epoks: unknown key"),
    ("[trianing]\nepochs = 3\n", r"unknown section \[trianing\]"),
    ("[training]\nepochs = 'many'\n", "training.epochs: expected int"),
    ("[model]\nhidden = 12\n", "model.hidden: expected tuple"),
    ("[threshold]\nmethod = 'magic'\n", "threshold.method must be one of"),
    ("[alerting]\npersistence_k = 9\n", "alerting.persistence_k must be between"),
    ("[model]\nactivation = 'sigmoid'\n", "unsupported activation"),
    ("[training\n", "invalid TOML"),
    ("[training]\ninterval_seconds = 0\n", "training.interval_seconds must be a number of seconds > 0"),
    ("[training]\ninterval_seconds = '5s'\n", "training.interval_seconds must be a number of seconds > 0"),
])
def test_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "bad.toml" in str(info.value)


def test_interval_from_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[training]\ninterval_seconds = 300\n")
    assert load_config(path).interval_seconds == 300 and load_config().interval_seconds is None


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml")
