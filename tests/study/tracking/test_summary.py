"""study/tracking/summary.py: the best trial and checkpoint are picked the same way whatever order Ray lists them in."""

import itertools

import pytest

from study.tracking.summary import _best_of

CASES = [  # (mode, (id, score) items, expected id)
    ("max", [("a", 0.5), ("b", 0.7), ("c", 0.6)], "b"),
    ("min", [("a", 0.5), ("b", 0.7), ("c", 0.6)], "a"),
    ("max", [("a", 0.525), ("c", 0.525), ("b", 0.4)], "c"),  # a tie: the largest id, in any order
    ("min", [("a", 0.3), ("c", 0.3), ("b", 0.4)], "c"),
]


@pytest.mark.parametrize(("mode", "items", "expected"), CASES)
def test_best_of_is_order_independent(mode, items, expected):
    picks = {_best_of(list(p), lambda x: x[1], mode, tiebreak=lambda x: x[0])[0] for p in itertools.permutations(items)}
    assert picks == {expected}
