import pytest

from detector.settings import ServeSettings, SettingsError, load_settings


def test_precedence_flag_env_file_default(tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[serve]\nmodel = "m"\ntopic = "from-file"\ngroup = "file-group"\nbatch_size = 10\n')
    env = {"VIGIL_TOPIC": "from-env", "VIGIL_ALERTS_TOPIC": "env-alerts", "VIGIL_MAX_WAIT_MS": "7"}
    s = load_settings({"topic": "from-flag", "group": None}, env=env, config=str(cfg))
    assert s.topic == "from-flag" and s.alerts_topic == "env-alerts" and s.group == "file-group"
    assert s.batch_size == 10 and s.max_wait_ms == 7 and s.dlq_topic == ServeSettings.dlq_topic


def test_config_from_env_variable(tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[serve]\nmodel = "m"\n')
    assert load_settings({}, env={"VIGIL_CONFIG": str(cfg)}).model == "m"


@pytest.mark.parametrize("flags, env, text, message", [
    ({}, {}, '[serve]\nmodel = "m"\nbogus = 1\n', "serve.bogus: unknown key"),
    ({}, {"VIGIL_BATCH_SIZE": "many"}, '[serve]\nmodel = "m"\n', "VIGIL_BATCH_SIZE: batch_size: expected int"),
    ({}, {}, '[serve]\nmodel = "m"\nbatch_size = "x"\n', "batch_size: expected int"),
    ({}, {}, "[serve]\n", "model: required"),
    ({"alert_k": 9}, {}, '[serve]\nmodel = "m"\n', "alert_k: must be <= alert_n"),
])
def test_errors_name_the_setting(tmp_path, flags, env, text, message):
    cfg = tmp_path / "serve.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(flags, env=env, config=str(cfg))
