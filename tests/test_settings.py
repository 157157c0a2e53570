import pytest

from detector.settings import ServeSettings, SettingsError, load_settings
from detector.threshold import Persistence


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
    ({"alert_k": 9}, {}, '[serve]\nmodel = "m"\nalert_n = 5\n', r"alert_k: must be <= alert_n \(5\), got 9"),
    ({}, {"VIGIL_ALERT_N": "4"}, '[serve]\nmodel = "m"\nalert_k = 6\n', r"alert_k: must be <= alert_n \(4\)"),
    ({"alert_k": "0"}, {}, '[serve]\nmodel = "m"\n', "alert_k: must be >= 1, got 0"),
    ({}, {"VIGIL_ALERT_N": "-1"}, '[serve]\nmodel = "m"\n', "alert_n: must be >= 1, got -1"),
    ({}, {"VIGIL_ALERT_K": "three"}, '[serve]\nmodel = "m"\n', "VIGIL_ALERT_K: alert_k: expected int, got 'three'"),
    ({}, {}, '[serve]\nmodel = "m"\nalert_n = 2.5\n', "alert_n: expected int, got 2.5"),
    ({}, {}, '[serve]\nmodel = "m"\nalert_k = true\n', "alert_k: expected int, got True"),
    ({}, {}, '[serve]\nmodel = "m"\nupdate_rise = 1.0\n', r"update_rise: must be a factor > 1 .*, got 1.0"),
    ({"update_rise": "0.5"}, {}, '[serve]\nmodel = "m"\n', "update_rise: must be a factor > 1"),
    ({}, {"VIGIL_UPDATE_RISE": "double"}, '[serve]\nmodel = "m"\n', "VIGIL_UPDATE_RISE: update_rise: expected float"),
    ({}, {"VIGIL_UPDATE_RISE": "inf"}, '[serve]\nmodel = "m"\n', "update_rise: must be a factor > 1"),
    ({}, {}, '[serve]\nmodel = "m"\nupdate_heartbeat_seconds = -1\n',
     "update_heartbeat_seconds: must be a number of seconds >= 0, got -1"),
    ({}, {"VIGIL_UPDATE_SECONDS": "-5"}, '[serve]\nmodel = "m"\n', "update_seconds: must be a number of seconds >= 0"),
    ({}, {}, '[serve]\nmodel = "m"\nupdate_heartbeat_seconds = "hourly"\n',
     "update_heartbeat_seconds: expected float, got 'hourly'"),
    ({"update_heartbeat_seconds": "90000"}, {}, '[serve]\nmodel = "m"\n',
     r"update_heartbeat_seconds: must be less than alert_lookback_seconds \(86400\)"),
])
def test_errors_name_the_setting(tmp_path, flags, env, text, message):
    cfg = tmp_path / "serve.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(flags, env=env, config=str(cfg))


MODEL_RULE = Persistence(2, 4)


def rule_in_force(settings):
    policy = settings.alert_policy(MODEL_RULE).for_model(MODEL_RULE)
    return policy.k, policy.n


@pytest.mark.parametrize("flags, env, text, expected", [
    ({}, {}, "", (None, None)),                                                   # the model's rule
    ({}, {}, "alert_k = 1\nalert_n = 3\n", (1, 3)),                              # file
    ({}, {"VIGIL_ALERT_K": "3", "VIGIL_ALERT_N": "6"}, "alert_k = 1\nalert_n = 3\n", (3, 6)),  # env over file
    ({"alert_k": "1", "alert_n": None}, {"VIGIL_ALERT_K": "3"}, "alert_n = 2\n", (1, 2)),    # flag over env
    ({}, {"VIGIL_ALERT_K": "model"}, "alert_k = 1\n", (None, None)),              # "model" undoes the file's
    ({"alert_n": ""}, {"VIGIL_ALERT_N": "6"}, "", (None, None)),                  # so does an empty value
    ({"alert_k": "3"}, {}, "", (3, None)),                                        # one alone
])
def test_alert_k_and_n_are_unset_unless_given(tmp_path, flags, env, text, expected):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[serve]\nmodel = "m"\n' + text)
    s = load_settings(flags, env=env, config=str(cfg))
    assert (s.alert_k, s.alert_n) == expected
    policy = s.alert_policy(MODEL_RULE)
    assert policy.overrides == tuple(name for name, v in zip(("alert_k", "alert_n"), expected) if v is not None)
    assert rule_in_force(s) == (expected[0] or MODEL_RULE.k, expected[1] or MODEL_RULE.n)


def test_the_other_alert_settings_go_into_the_policy():
    s = ServeSettings(model="m", alert_k=1, exit_threshold=0.5, resolve_after=4, update_seconds=2.0,
                      update_rise=2.0, update_heartbeat_seconds=600.0)
    policy = s.alert_policy(MODEL_RULE)
    assert (policy.k, policy.n, policy.exit_threshold, policy.resolve_after, policy.update_seconds) == \
        (1, None, 0.5, 4, 2.0)
    assert (policy.update_rise, policy.update_heartbeat_seconds) == (2.0, 600.0)


def test_update_settings_default_and_from_each_source(tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[serve]\nmodel = "m"\nupdate_heartbeat_seconds = 1800\n')
    s = load_settings({}, env={}, config=str(cfg))
    assert (s.update_seconds, s.update_rise, s.update_heartbeat_seconds) == (10.0, 1.5, 1800.0)
    s = load_settings({"update_rise": "3"}, env={"VIGIL_UPDATE_HEARTBEAT_SECONDS": "7200"}, config=str(cfg))
    assert (s.update_rise, s.update_heartbeat_seconds) == (3.0, 7200.0)


@pytest.mark.parametrize("values, message", [
    ({"alert_k": 5}, "alert_k: 5 is more than the model's n (its rule is 2 of 4); set alert_n too, "
                     "or alert_k <= 4"),
    ({"alert_n": 1}, "alert_n: 1 is less than the model's k (its rule is 2 of 4); set alert_k too, "
                     "or alert_n >= 2"),
])
def test_a_lone_alert_k_or_n_is_checked_against_the_models_rule(values, message):
    s = ServeSettings(model="m", **values).validate()  # fine on its own: the model is not known yet
    with pytest.raises(SettingsError) as info:
        s.alert_policy(MODEL_RULE)
    assert str(info.value) == message
