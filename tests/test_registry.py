import json

import pytest

from detector.artifact import ArtifactError
from detector.registry import current_version, load_model_or_registry, promotion_stack, rollback, versions
from vigil.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_registry(tmp_path_factory):
    from vigil import synthetic

    tmp_path = tmp_path_factory.mktemp("registry")
    normal_csv = synthetic.write_csv(tmp_path / "normal.csv", synthetic.generate(1200, seed=1)[0])
    (tmp_path / "tiny.toml").write_text("[model]\nwindow = 8\nhidden = [16]\nlatent = 4\n[training]\nepochs = 3\n")
    reg = tmp_path / "models"
    names = []
    for seed in (1, 2, 3):
        assert main(["train", "--data", str(normal_csv), "--registry", str(reg), "--config", str(tmp_path / "tiny.toml"),
                     "--seed", str(seed), "--quiet"] + (["--promote"] if seed == 1 else [])) == 0
        names.append(max(versions(reg), key=lambda v: (reg / v / "config.json").stat().st_mtime))
    return reg, names


@pytest.fixture
def registry(trained_registry, tmp_path):
    """A fresh copy of the trained registry for each test."""
    import shutil

    reg, names = trained_registry
    copy = tmp_path / "models"
    shutil.copytree(reg, copy)
    return copy, names


def test_train_registers_versions_and_promotes_only_when_asked(registry):
    reg, names = registry
    assert len(versions(reg)) == 3 and current_version(reg) == names[0]
    assert load_model_or_registry(reg).version == names[0]


def test_promote_and_rollback(registry, capsys):
    reg, (v1, v2, v3) = registry
    assert main(["models", "promote", v2, "--registry", str(reg)]) == 0
    assert main(["models", "promote", v3, "--registry", str(reg)]) == 0
    assert promotion_stack(reg) == [v1, v2, v3]
    assert rollback(reg) == v2 and current_version(reg) == v2
    assert main(["models", "rollback", "--registry", str(reg)]) == 0
    assert current_version(reg) == v1
    assert main(["models", "rollback", "--registry", str(reg)]) == 2
    assert "no earlier promoted version" in capsys.readouterr().err


def test_list_and_show(registry, capsys):
    reg, (v1, v2, v3) = registry
    capsys.readouterr()
    assert main(["models", "list", "--registry", str(reg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and [line for line in lines if line.startswith("*")][0].split()[1] == v1
    assert all("interval 1 s" in line for line in lines)  # the fixture's data: 1 Hz
    assert main(["models", "show", v2, "--registry", str(reg)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == v2 and shown["window"] == 8 and "training" in shown
    assert shown["interval_seconds"] == 1.0 and shown["training"]["interval_source"] == "data"


def test_promoting_a_broken_version_is_refused(registry, capsys):
    reg, (v1, v2, _) = registry
    (reg / v2 / "params.msgpack").write_bytes(b"broken")
    assert main(["models", "promote", v2, "--registry", str(reg)]) == 2
    assert "SHA-256 does not match" in capsys.readouterr().err
    assert current_version(reg) == v1
    assert main(["models", "promote", "nope", "--registry", str(reg)]) == 2


def test_current_naming_a_missing_version(registry):
    reg, _ = registry
    (reg / "current").write_text("gone\n")
    with pytest.raises(ArtifactError, match="names version 'gone'"):
        load_model_or_registry(reg)


def test_train_needs_out_or_registry(normal_csv, capsys):
    assert main(["train", "--data", str(normal_csv)]) == 2
    assert "exactly one of --out" in capsys.readouterr().err
