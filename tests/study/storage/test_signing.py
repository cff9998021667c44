"""``study.storage.signing``: Ray's pickled state is signed as the driver writes it, with a key only
this user holds, and what ``--resume`` would unpickle is checked against it."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pyarrow.fs
import pytest

from study.storage import signing
from study.storage.atomic_fs import AtomicLocalFS
from trainables.config import ConfigError


class Payload:
    """Unpickling this creates ``marker`` (stands for any code a planted pickle could run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    yield tmp_path / "config"
    signing.stop_signing()


def _write(fs, path: Path, data: bytes) -> None:
    with fs.open_output_stream(str(path)) as f:
        f.write(data)


@pytest.fixture
def experiment(tmp_path, config) -> Path:
    """An experiment dir whose state files the driver wrote through AtomicLocalFS while signing."""
    exp = tmp_path / "studies" / "s"
    exp.mkdir(parents=True)
    signing.start_signing(str(exp))
    fs = pyarrow.fs.PyFileSystem(AtomicLocalFS())
    _write(fs, exp / "tuner.pkl", pickle.dumps({"a": 1}))
    _write(fs, exp / "experiment_state-2026-01-01_00-00-00.json", b'{"trial_data": []}')
    _write(fs, exp / "searcher-state-2026-01-01_00-00-00.pkl", pickle.dumps([1, 2]))
    fs.copy_file(str(exp / "tuner.pkl"), str(exp / "callback-states-2026-01-01_00-00-00.pkl"))
    (exp / "trial_a").mkdir()
    _write(fs, exp / "trial_a" / "result.json", b"{}\n")
    return exp


def test_the_key_is_made_once_for_this_user_only(config, monkeypatch, tmp_path):
    key = signing.load_key(create=True)
    path = config / "lora-study" / "hmac.key"
    assert path.is_file() and len(key) >= 32 and signing.load_key() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert signing.key_path() == tmp_path / "home" / ".config" / "lora-study" / "hmac.key"


def test_a_key_others_can_read_is_refused_in_one_line(config):
    signing.load_key(create=True)
    os.chmod(signing.key_path(), 0o644)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        signing.load_key()
    assert "\n" not in str(err.value)


def test_state_the_driver_wrote_is_trusted(experiment):
    assert signing.untrusted_state(str(experiment)) == []
    assert signing.unreadable_state(str(experiment)) is None
    assert not (experiment / "trial_a" / signing.SIGNATURES).exists(), "only the experiment's own state is signed"


def test_planted_edited_and_foreign_state_is_not(experiment, tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    (experiment / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))  # replaced by someone else
    (experiment / "searcher-state-2026-01-02_00-00-00.pkl").write_bytes(pickle.dumps(1))  # never signed
    assert sorted(signing.untrusted_state(str(experiment))) == [("searcher-state-2026-01-02_00-00-00.pkl", "unsigned"),
                                                                ("tuner.pkl", "changed")]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "someone-else"))  # another user's key
    assert {why for _, why in signing.untrusted_state(str(experiment))} == {"unsigned"}
    assert not marker.exists(), "checking ran the pickle"


def test_a_copied_study_stays_trusted(experiment, tmp_path):
    import shutil

    shutil.copytree(experiment, tmp_path / "copy" / "s")
    assert signing.untrusted_state(str(tmp_path / "copy" / "s")) == []


def test_a_crash_between_signing_and_renaming_leaves_a_trusted_file(experiment):
    """The signature of the new content is written before the rename: a driver killed in between
    leaves the old content, whose signature is still there."""
    new = b'{"trial_data": [1]}'
    mac = signing.mac_for(str(experiment / "experiment_state-2026-01-01_00-00-00.json"))
    mac.update(new)
    signing.record(str(experiment / "experiment_state-2026-01-01_00-00-00.json"), mac)  # ... killed here
    assert signing.untrusted_state(str(experiment)) == []
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_bytes(new)  # or just after the rename
    assert signing.untrusted_state(str(experiment)) == []


def test_the_signature_file_stays_small(experiment, monkeypatch):
    monkeypatch.setattr(signing, "_COMPACT_AT", 2000)
    fs = pyarrow.fs.PyFileSystem(AtomicLocalFS())
    for i in range(100):
        _write(fs, experiment / "experiment_state-2026-01-01_00-00-00.json", b'{"n": %d}' % i)
        _write(fs, experiment / "tuner.pkl", pickle.dumps({"a": 1}))  # unchanged: signed once
    assert (experiment / signing.SIGNATURES).stat().st_size <= 2000
    assert signing.untrusted_state(str(experiment)) == []


def test_truncated_and_empty_pickles_are_found_without_running_them(experiment, tmp_path):
    marker = tmp_path / "PWNED"
    data = pickle.dumps(Payload(marker))
    (experiment / "tuner.pkl").write_bytes(data[: len(data) // 2])
    assert signing.unreadable_state(str(experiment))[0] == "tuner.pkl"
    (experiment / "tuner.pkl").write_bytes(b"")
    assert signing.unreadable_state(str(experiment)) == ("tuner.pkl", "empty")
    (experiment / "tuner.pkl").write_bytes(data)
    assert signing.unreadable_state(str(experiment)) is None and not marker.exists()


def test_adopting_signs_what_is_there_now(experiment, tmp_path, monkeypatch):
    """``--resume --trust`` of a study from elsewhere signs its state, so the next resume is checked
    like any other."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))
    assert signing.untrusted_state(str(experiment))
    signing.adopt(str(experiment))
    assert signing.untrusted_state(str(experiment)) == []
    assert stat.S_IMODE((experiment / signing.SIGNATURES).stat().st_mode) == 0o600


def test_state_of_a_listed_subdirectory_is_signed_and_no_other(config, tmp_path):
    """A refit's stages are experiments inside the study's: signed when the driver lists them;
    state files elsewhere below the experiment (a trial's directory) are not."""
    exp = tmp_path / "studies" / "s"
    (exp / "stage").mkdir(parents=True)
    (exp / "trial_a").mkdir()
    signing.start_signing(str(exp), ("stage",))
    fs = pyarrow.fs.PyFileSystem(AtomicLocalFS())
    for d in (exp, exp / "stage", exp / "trial_a"):
        _write(fs, d / "tuner.pkl", pickle.dumps({"a": 1}))
    assert signing.untrusted_state(str(exp)) == [] and signing.untrusted_state(str(exp / "stage")) == []
    assert signing.untrusted_state(str(exp / "trial_a")) == [("tuner.pkl", "unsigned")]
