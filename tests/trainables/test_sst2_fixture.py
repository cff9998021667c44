"""The suite's SST-2 TSVs (``sst2`` in ``tests/conftest.py``) are the embedded copy, text for text:
what the data tests read on a bare clone is what a study reads by default."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.config import EMBEDDED_DATA, DataSection
from trainables.data import load_splits


@pytest.mark.parametrize("split", ["train", "dev"])
def test_tsv_fixture_reads_back_as_the_embedded_split(sst2, split):
    tsv, emb = load_splits(DataSection(path=str(sst2))), load_splits(DataSection(path=EMBEDDED_DATA))
    assert getattr(tsv, f"{split}_texts") == getattr(emb, f"{split}_texts")
    np.testing.assert_array_equal(getattr(tsv, f"{split}_labels"), getattr(emb, f"{split}_labels"))
    assert tsv.label_names == emb.label_names == ["0", "1"]


def test_tsv_fixture_has_glue_layout(sst2):
    for name in ("train.tsv", "dev.tsv"):
        head = (sst2 / name).read_text(encoding="utf-8").splitlines()[:2]
        assert head[0] == "sentence\tlabel" and head[1].count("\t") == 1, head
