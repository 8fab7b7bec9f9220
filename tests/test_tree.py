import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nestopt.tree import check_like, tree_add, tree_dot, tree_flatten, tree_norm, tree_unflatten


@given(shapes=st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=4))
def test_flatten_unflatten_round_trip_and_dot(shapes):
    tree = {f"p{i}": torch.randn(tuple(s), dtype=torch.float64) for i, s in enumerate(shapes)}
    flat = tree_flatten(tree)
    back = tree_unflatten(flat, tree)
    assert all(torch.equal(back[k], tree[k]) for k in tree)
    assert float(tree_dot(tree, tree)) == pytest.approx(float(flat @ flat))
    assert float(tree_norm(tree_add(tree, tree, -1.0))) == 0.0


def test_check_like_names_the_mismatch():
    like = {"w": torch.ones(2, 3)}
    with pytest.raises(
        ValueError, match=r"shape mismatch: v\['w'\] is \(3, 2\) but params\['w'\] is \(2, 3\)"
    ):
        check_like({"w": torch.ones(3, 2)}, like, "v", "params")
    with pytest.raises(ValueError, match=r"missing keys \['w'\], extra keys \['b'\]"):
        check_like({"b": torch.ones(2, 3)}, like, "v", "params")
