"""``data.test_path``: read with the train split's label ids, refused in one line when its labels
are not the training labels, never read by a trial, and scored on a checkpoint exactly as the
trial scores its own splits. Also the memory estimate a refit is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trainables.data
from trainables import memory_estimate, score_test
from trainables.checks import preflight
from trainables.config import DataSection, TrialConfig
from trainables.data import DataError, load_splits, load_test
from trainables.loop import run_trial

TRAIN = "sentence\tlabel\n" + "".join(f"text {i}\t{lab}\n" for i, lab in enumerate(["neg", "pos"] * 4))


def _data(tmp_path: Path, test: str, ext: str = "tsv") -> DataSection:
    (tmp_path / "train.tsv").write_text(TRAIN)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\na\tpos\nb\tneg\n")
    (tmp_path / f"test.{ext}").write_text(test)
    return DataSection(path=str(tmp_path), test_path=str(tmp_path / f"test.{ext}"))


READ = [  # (id, file, extension, ids the labels get)
    ("tsv, string labels", "sentence\tlabel\nx\tpos\ny\tneg\nz\tpos\n", "tsv", [1, 0, 1]),
    ("csv, one label only", "sentence,label\nx,neg\ny,neg\n", "csv", [0, 0]),
    ("jsonl", '{"sentence": "x", "label": "pos"}\n{"sentence": "y", "label": "neg"}\n', "jsonl", [1, 0]),
]


@pytest.mark.parametrize("test,ext,ids", [r[1:] for r in READ], ids=[r[0] for r in READ])
def test_labels_get_the_train_splits_ids(tmp_path, test, ext, ids):
    texts, labels, path = load_test(_data(tmp_path, test, ext))
    assert labels.tolist() == ids and len(texts) == len(ids) and path == str(tmp_path / f"test.{ext}")


def test_renamed_labels_keep_the_files_spelling(tmp_path):
    """``data.label_names`` renames the classes for display; the test file still spells them as train does."""
    cfg = _data(tmp_path, "sentence\tlabel\nx\tpos\n").model_copy(update={"label_names": ["negative", "positive"]})
    assert load_test(cfg)[1].tolist() == [1]


BAD = [  # (id, test file, what the one line says)
    ("a label train lacks", "sentence\tlabel\nx\tpos\ny\tneutral\n", "labels ['neutral'] are not training labels (the train split has ['neg', 'pos'])"),
    ("integer labels for string classes", "sentence\tlabel\nx\t1\ny\t0\n", "labels ['0', '1'] are not training labels"),
    ("no label column", "sentence\tstars\nx\t5\n", "no column 'label'"),
    ("a missing text", "sentence\tlabel\n\tpos\n", "column 'sentence' has 1 empty or missing texts of 1"),
]


@pytest.mark.parametrize("test,needle", [r[1:] for r in BAD], ids=[r[0] for r in BAD])
def test_bad_test_files_are_one_line(tmp_path, test, needle):
    with pytest.raises(DataError) as e:
        load_test(_data(tmp_path, test))
    assert needle in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("data.test_path=")


def test_a_missing_test_file_is_one_line(tmp_path):
    cfg = _data(tmp_path, "").model_copy(update={"test_path": str(tmp_path / "nope.tsv")})
    with pytest.raises(DataError, match=r"data.test_path=.*nope.tsv: no such file"):
        load_test(cfg)


def test_preflight_checks_the_test_file(tmp_path, tiny_bert):
    data = _data(tmp_path, "sentence\tlabel\nx\tneutral\n")
    with pytest.raises(DataError, match="not training labels"):
        preflight(TrialConfig(model={"name": str(tiny_bert)}, data=data))


def tiny_cfg(model, data, test_path):
    return TrialConfig.from_dict({"model.name": str(model), "data.path": str(data), "data.size": 128, "data.max_length": 32,
                                  "data.test_path": str(test_path), "train.epochs": 1, "train.batch_size": 16,
                                  "train.threads": 1, "lora.r": 4})


def test_a_trial_never_reads_the_test_file_and_scores_it_like_its_own_splits(tiny_bert, sst2_small, monkeypatch):
    """The test file is the dev file here, so the checkpoint's test score must equal the dev
    metrics the trial reported with it; and the trial itself never opened the test file."""
    read, real = [], trainables.data.read_table
    monkeypatch.setattr(trainables.data, "read_table", lambda path, *a, **k: read.append(Path(path).name) or real(path, *a, **k))
    dev = sst2_small / "dev.tsv"
    test = dev.parent.parent / "copy-of-dev.tsv"
    test.write_text(dev.read_text())
    kept = {}

    def report(metrics, ckpt):
        import shutil

        kept["metrics"] = metrics
        kept["dir"] = shutil.copytree(ckpt, test.parent / "ckpt", dirs_exist_ok=True)

    run_trial(tiny_cfg(tiny_bert, sst2_small, test), report=report)
    assert "copy-of-dev.tsv" not in read and {"train.tsv", "dev.tsv"} <= set(read)
    scored = score_test(kept["dir"])
    assert scored["n"] == 200 and scored["path"] == str(test.resolve())
    for key in ("accuracy", "f1", "eval_loss"):
        assert scored[key] == pytest.approx(kept["metrics"][key], abs=1e-6), key


def test_memory_estimate_grows_with_data_and_batch(tiny_bert, sst2_small):
    def est(**over):
        return memory_estimate(TrialConfig.from_dict({"model.name": str(tiny_bert), "data.path": str(sst2_small), **over}))

    small, big, wide = est(**{"data.size": 100}), est(), est(**{"train.batch_size": 64})
    assert small.data < big.data and big.activations < wide.activations and small.weights == big.weights > 0
    assert big.total == big.weights + big.optimizer + big.activations + big.data + big.runtime
    assert big.describe().endswith(" GiB)") and "activations" in big.describe()
    n_train = len(load_splits(DataSection(path=str(sst2_small))).train_texts)
    assert np.isclose(est(**{"data.size": n_train}).data, big.data)
