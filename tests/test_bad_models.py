"""Bad models and files: every case gives one clear error, never a half-written version the
daemon could load, and the serving model keeps serving.

Three places read models: `vigil serve --model` at start-up, `vigil models promote`, and the
daemon's hot reload (ModelWatcher.poll + Pipeline.swap_model via Service.check_reload, run
here in-process: Service() loads the model without touching Kafka). Writing is
`vigil train --registry` / `vigil retrain` (detector.artifact.save) and promotion.
"""

import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx
from prometheus_client import CollectorRegistry

from detector.artifact import ArtifactError, TrainedModel, save, temporaries
from detector.model import VAE, ModelConfig
from detector.preprocessing import Scaler
from detector.registry import current_version, leftovers, promote, promotion_stack, versions
from detector.threshold import Persistence, Threshold
from vigil.cli import main


def make_model(sensors=("a", "b"), window=4, seed=0, nan=False, version=""):
    cfg = ModelConfig(window=window, hidden=(8,), latent=2)
    vae = VAE(cfg, len(sensors), rngs=nnx.Rngs(seed))
    if nan:
        vae.obs_logvar[...] = vae.obs_logvar[...].at[0].set(float("nan"))
    n = len(sensors)
    return TrainedModel(tuple(sensors), cfg, Scaler(np.zeros(n, np.float32), np.ones(n, np.float32)), vae,
                        Threshold(1.0, "quantile"), Persistence(), version=version)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A registry: v1 current (sensors a, b; window 4) and a spare good version v2."""
    reg = tmp_path_factory.mktemp("pristine") / "models"
    save(make_model(version="v1"), reg / "v1")
    save(make_model(seed=1, version="v2"), reg / "v2")
    promote(reg, "v1")
    return reg


@pytest.fixture
def reg(pristine, tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def resign(directory, name):
    """Re-write the manifest entry of name, as someone editing a model by hand would."""
    lines = []
    for line in (directory / "SHA256SUMS").read_text().splitlines():
        digest, file = line.split("  ")
        if file == name:
            digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {file}\n")
    (directory / "SHA256SUMS").write_text("".join(lines))


def edit_config(change, sign=True):
    def apply(d):
        config = json.loads((d / "config.json").read_text())
        change(config)
        (d / "config.json").write_text(json.dumps(config))
        if sign:
            resign(d, "config.json")
    return apply


def truncate_params(sign=False):
    def apply(d):
        (d / "params.msgpack").write_bytes((d / "params.msgpack").read_bytes()[:50])
        if sign:
            resign(d, "params.msgpack")
    return apply


def flip_byte(d):
    data = bytearray((d / "params.msgpack").read_bytes())
    data[200] ^= 0xFF
    (d / "params.msgpack").write_bytes(bytes(data))


def nan_params(d):
    shutil.rmtree(d)
    save(make_model(nan=True), d)


def one_line(text):
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


# (how to break version v2, what the one error line says)
BROKEN = {
    "truncated params": (truncate_params(), "params.msgpack: SHA-256 does not match SHA256SUMS"),
    "truncated params, re-signed": (truncate_params(sign=True), "params.msgpack: cannot be decoded"),
    "tampered params": (flip_byte, "params.msgpack: SHA-256 does not match SHA256SUMS"),
    "tampered config": (edit_config(lambda c: c.update(sensors=["x", "y"]), sign=False),
                        "config.json: SHA-256 does not match SHA256SUMS"),
    "missing manifest": (lambda d: (d / "SHA256SUMS").unlink(), "no SHA256SUMS manifest; not a complete Vigil model"),
    "extra file": (lambda d: (d / "NOTES.txt").write_text("hi"), "NOTES.txt: not listed in SHA256SUMS"),
    "manifest names a file outside": (
        lambda d: (d / "SHA256SUMS").write_text((d / "SHA256SUMS").read_text() + "0" * 64 + "  ../v1/config.json\n"),
        "malformed manifest entry"),
    "config for more sensors, re-signed": (edit_config(lambda c: c.update(sensors=["a", "b", "c"])),
                                           "parameters do not match the architecture in config.json"),
    "config window disagrees, re-signed": (edit_config(lambda c: c.update(window=9)),
                                           "window 9 does not match the model's window 4"),
    "sensor listed twice, re-signed": (edit_config(lambda c: c.update(sensors=["a", "a"])),
                                       "sensors listed twice: ['a']"),
    "threshold not a number, re-signed": (edit_config(lambda c: c["threshold"].update(value=float("nan"))),
                                          "threshold nan is not a finite number > 0"),
    "NaN parameters": (nan_params, "params.msgpack: parameters contain NaN or infinity"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BROKEN)
def test_broken_version_refused_at_start_up_promote_and_hot_reload(case, reg, capsys, caplog):
    from detector.service import Service
    from detector.settings import ServeSettings

    breaker, expected = BROKEN[case]
    breaker(reg / "v2")
    history = (reg / "history").read_bytes()

    # vigil serve --model VERSION_DIR: exit 2, one line, before any Kafka connection
    assert main(["serve", "--model", str(reg / "v2")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("vigil serve: error: ") and expected in line

    # vigil models promote: refused, current and history unchanged
    assert main(["models", "promote", "v2", "--registry", str(reg)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("vigil models: error: ") and expected in line
    assert current_version(reg) == "v1" and (reg / "history").read_bytes() == history

    # hot reload: refused once, logged, counted, and v1 keeps serving
    service = Service(ServeSettings(model=str(reg), reload_seconds=0), CollectorRegistry())
    served = service.pipeline.model
    (reg / "current").write_text("v2\n")  # as a hand edit would; promote refuses
    with caplog.at_level(logging.ERROR, logger="vigil.serve"):
        service.check_reload()
        service.check_reload()  # the same refused version is not retried
    assert service.pipeline.model is served
    assert service.registry.get_sample_value("vigil_model_reloads_total", {"result": "refused"}) == 1
    [record] = caplog.records
    assert "hot reload refused for version v2" in record.getMessage() and expected in record.getMessage()
    assert "still serving" in record.getMessage()


def test_models_list_marks_broken_versions_and_goes_on(reg, capsys):
    (reg / "v2" / "config.json").write_text("{")
    assert main(["models", "list", "--registry", str(reg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("* v1  created")
    assert lines[1].startswith("  v2  BROKEN: ") and "config.json: SHA-256 does not match" in lines[1]


# -- models for other sensors, another window: legitimate, allowed ---------------------------------

@pytest.mark.parametrize("other, note", [  # the models are made when the test runs, not at collection
    (dict(sensors=("x", "y")), "warning: model other shares no sensor with v1"),
    (dict(sensors=("a", "c")), "note: model other uses other sensors than v1; no longer used: b; new: c"),
    (dict(window=6), "note: model other has window 6 (was 4)"),
])
@pytest.mark.slow
def test_model_for_other_sensors_or_window_is_allowed_and_windows_start_afresh(other, note, reg, capsys):
    from detector.service import Service
    from detector.settings import ServeSettings

    service = Service(ServeSettings(model=str(reg), reload_seconds=0), CollectorRegistry())
    windows = service.pipeline.windows
    other = make_model(**other, version="other")
    save(other, reg / "other")
    assert main(["models", "promote", "other", "--registry", str(reg)]) == 0
    err = capsys.readouterr().err
    assert note in err and "every asset's window starts afresh" in err
    service.check_reload()
    assert service.pipeline.model.version == "other" and service.pipeline.windows is not windows
    assert service.registry.get_sample_value("vigil_model_reloads_total", {"result": "ok"}) == 1


# -- `current` -----------------------------------------------------------------------------------

def _symlink_outside(reg):
    outside = reg.parent / "outside"
    outside.write_text("v1\n")  # even a valid name is refused: current must be a plain file
    (reg / "current").unlink()
    (reg / "current").symlink_to(outside)


def _directory(reg):
    (reg / "current").unlink()
    (reg / "current").mkdir()


CURRENT = {
    "names a missing version": (lambda r: (r / "current").write_text("gone\n"),
                                "current names version 'gone', but {reg}/gone does not exist",
                                "current names version 'gone', but {reg}/gone is not a model version"),
    "empty": (lambda r: (r / "current").write_text(""), "current: empty; it should hold one version name", None),
    "garbage bytes": (lambda r: (r / "current").write_bytes(bytes(range(128, 256))), "current: not text", None),
    "two lines": (lambda r: (r / "current").write_text("v1\nv2\n"), "'v1\\nv2' is not a version name", None),
    "a path outside": (lambda r: (r / "current").write_text("../other/v1\n"),
                       "'../other/v1' is not a version name", None),
    "a hidden temporary directory": (lambda r: (r / "current").write_text(".tmp-v3.abcd1234\n"),
                                     "'.tmp-v3.abcd1234' is not a version name", None),
    "a directory": (_directory, "current: not a regular file", None),
    "a symlink outside": (_symlink_outside, "current: a symlink (to {reg.parent}/outside)", None),
    "deleted": (lambda r: (r / "current").unlink(), "current: missing; this registry has no current model", None),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CURRENT)
def test_bad_current_is_one_clear_error(case, reg, capsys, caplog):
    from detector.service import Service
    from detector.settings import ServeSettings

    service = Service(ServeSettings(model=str(reg), reload_seconds=0), CollectorRegistry())
    served = service.pipeline.model
    breaker, expected, listed = CURRENT[case]
    breaker(reg)
    expected = expected.format(reg=reg)

    for argv in (["serve", "--model", str(reg)], ["retrain", "--registry", str(reg), "--data", str(reg)]):
        assert main(argv) == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith(f"vigil {argv[0]}: error: ") and expected in line, line

    assert main(["models", "list", "--registry", str(reg)]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["v1", "v2"]  # no '*'
    level = "note: no current model yet" if case == "deleted" else "warning: "
    assert one_line(err).startswith(f"vigil models: {level}")
    if case != "deleted":
        assert (listed or expected).format(reg=reg) in err

    with caplog.at_level(logging.ERROR, logger="vigil.serve"):
        service.check_reload()
    assert service.pipeline.model is served
    assert service.registry.get_sample_value("vigil_model_reloads_total", {"result": "refused"}) == 1
    assert "still serving" in caplog.records[0].getMessage()

    # promoting a good version repairs the registry (a directory has to go first)
    if case == "a directory":
        assert main(["models", "promote", "v2", "--registry", str(reg)]) == 2
        assert "current: a directory, not a file; remove it, then promote again" in capsys.readouterr().err
        (reg / "current").rmdir()
    assert main(["models", "promote", "v2", "--registry", str(reg)]) == 0
    assert current_version(reg) == "v2" and not (reg / "current").is_symlink()
    service.check_reload()
    assert service.pipeline.model.version == "v2"


def test_current_is_readable_by_a_daemon_running_as_another_user(reg):
    promote(reg, "v2")
    assert (reg / "current").stat().st_mode & 0o777 == 0o644
    assert (reg / "history").stat().st_mode & 0o777 == 0o644


# -- unwritable registry, full disk ---------------------------------------------------------------

class FailingFsync:
    """os.fsync that fails with ENOSPC from its `after`-th call on: a disk that fills up mid-write."""

    def __init__(self, after=1):
        self.calls, self.after = 0, after
        self.real = os.fsync

    def __call__(self, fd):
        self.calls += 1
        if self.calls > self.after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real(fd)


def test_disk_full_mid_save_leaves_nothing(reg, monkeypatch):
    """config.json is written, params.msgpack fails: no version, no temporary directory."""
    before = sorted(p.name for p in reg.iterdir())
    monkeypatch.setattr(os, "fsync", FailingFsync(after=1))
    with pytest.raises(ArtifactError) as info:
        save(make_model(seed=3), reg / "v3")
    assert str(info.value) == (f"{reg}/v3: cannot save the model: disk full (no space left on device) "
                               "writing params.msgpack; nothing was saved")
    assert sorted(p.name for p in reg.iterdir()) == before and versions(reg) == ["v1", "v2"]


def test_disk_full_during_promote_changes_nothing(reg, monkeypatch):
    history = (reg / "history").read_bytes()
    monkeypatch.setattr(os, "fsync", FailingFsync(after=1))  # current is staged, history is not
    with pytest.raises(ArtifactError) as info:
        promote(reg, "v2")
    assert str(info.value).startswith(f"{reg}: cannot make v2 current: disk full (no space left on device)")
    assert str(info.value).endswith("; current is unchanged")
    assert current_version(reg) == "v1" and (reg / "history").read_bytes() == history
    assert leftovers(reg) == [] and promotion_stack(reg) == ["v1"]


def test_unwritable_registry_fails_before_training(tmp_path, normal_csv, capsys):
    """As root, permissions do not stop writes; a registry whose parent is a regular file does."""
    (tmp_path / "file").write_text("")
    t0 = time.monotonic()
    assert main(["train", "--data", str(normal_csv), "--registry", str(tmp_path / "file" / "models"), "--quiet"]) == 2
    assert time.monotonic() - t0 < 10  # no training was wasted
    assert one_line(capsys.readouterr().err) == (
        f"vigil train: error: {tmp_path}/file/models: cannot write models here: "
        f"not a directory (a parent of it is a file): {tmp_path}/file/models")


TINY = "[model]\nwindow = 8\nhidden = [16]\nlatent = 4\n[training]\nepochs = 2\nmax_steps_per_epoch = 5\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vigil import synthetic

    tmp = tmp_path_factory.mktemp("trained")
    data = synthetic.write_csv(tmp / "normal.csv", synthetic.generate(1200, seed=1)[0])
    (tmp / "tiny.toml").write_text(TINY)
    assert main(["train", "--data", str(data), "--registry", str(tmp / "models"), "--config", str(tmp / "tiny.toml"),
                 "--promote", "--quiet"]) == 0
    return tmp


@pytest.mark.slow
def test_train_on_a_full_disk_exits_2_and_leaves_no_version(trained, tmp_path):
    """A real full disk in a subprocess: RLIMIT_FSIZE makes writes fail with EFBIG (SIGXFSZ ignored)."""
    reg = tmp_path / "models"
    shutil.copytree(trained / "models", reg)
    before = sorted(p.name for p in reg.iterdir())
    history = (reg / "history").read_bytes()
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
              "from vigil.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, "train", "--data", str(trained / "normal.csv"),
                           "--registry", str(reg), "--config", str(trained / "tiny.toml"), "--promote", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=os.environ | {"JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2, proc.stderr
    # the tiny test data draws vigil inspect's "too few windows" warning (shown even with --quiet)
    line = one_line("\n".join(x for x in proc.stderr.splitlines() if ": warning: " not in x))
    assert line.startswith(f"vigil train: error: {reg}/")
    assert line.endswith(": cannot save the model: file too large (a file-size limit, or a full disk) "
                         "writing config.json; nothing was saved")
    assert sorted(p.name for p in reg.iterdir()) == before and (reg / "history").read_bytes() == history


@pytest.mark.slow
def test_retrain_on_a_full_disk_exits_2_and_keeps_the_current_model(trained, tmp_path, monkeypatch, capsys):
    reg = tmp_path / "models"
    shutil.copytree(trained / "models", reg)
    before, current = sorted(p.name for p in reg.iterdir()), current_version(reg)
    monkeypatch.setattr(os, "fsync", FailingFsync(after=0))
    assert main(["retrain", "--registry", str(reg), "--data", str(trained / "normal.csv"), "--epochs", "1",
                 "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"vigil retrain: error: {reg}/") and "disk full (no space left on device)" in line
    assert sorted(p.name for p in reg.iterdir()) == before and current_version(reg) == current


# -- leftovers of a crash mid-save ----------------------------------------------------------------

def test_a_crash_mid_save_leaves_a_temporary_that_is_never_a_version(reg, capsys):
    stale = reg / ".tmp-v3.abcd1234"  # what save() leaves when killed between writes
    stale.mkdir()
    (stale / "config.json").write_text((reg / "v1" / "config.json").read_text())
    fresh = reg / ".tmp-v4.efgh5678"  # a save in progress right now
    shutil.copytree(reg / "v1", fresh)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert versions(reg) == ["v1", "v2"] and temporaries(reg) == [stale, fresh]

    assert main(["models", "list", "--registry", str(reg)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert err.splitlines() == [f"vigil models: note: {p}: left by an interrupted save or promotion (or one in "
                                "progress); never loaded, safe to delete when no vigil train or retrain is running"
                                for p in (stale, fresh)]
    assert main(["models", "promote", stale.name, "--registry", str(reg)]) == 2
    assert "is not a version name" in capsys.readouterr().err

    save(make_model(seed=5), reg / "v5")  # the next save removes leftovers over an hour old
    assert temporaries(reg) == [fresh] and versions(reg) == ["v1", "v2", "v5"]
