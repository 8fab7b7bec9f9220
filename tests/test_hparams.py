import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from nestopt.hparams import CONSTRAINTS, ExampleWeights, WeightDecay, constraint


@given(value=st.floats(1e-6, 1e3), name=st.sampled_from(["exp", "softplus"]))
def test_positive_constraints_invert_their_initial_value(value, name):
    c = CONSTRAINTS[name]
    assert float(c.forward(torch.tensor(c.inverse(value), dtype=torch.float64))) == pytest.approx(
        value, rel=1e-9
    )


@given(value=st.floats(1e-4, 1 - 1e-4))
def test_sigmoid_constraint_inverts_fractions(value):
    c = constraint("sigmoid")
    assert float(c.forward(torch.tensor(c.inverse(value), dtype=torch.float64))) == pytest.approx(
        value, rel=1e-9
    )


@pytest.mark.parametrize(("per", "count"), [("weight", 3 * 4 + 4 + 4 * 2 + 2), ("layer", 4), ("global", 1)])
def test_weight_decay_granularity_sets_the_number_of_hyperparameters(per, count):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    decay = WeightDecay(model, init=0.01, per=per)
    assert sum(p.numel() for p in decay.parameters()) == count
    params = dict(model.named_parameters())
    expected = 0.5 * 0.01 * sum((p**2).sum() for p in params.values())
    assert float(decay.penalty(decay.tree(), params).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_weight_decay_include_selects_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    decay = WeightDecay(model, include=lambda name, p: name.endswith("weight"))
    assert decay.names == ["0.weight", "1.weight"]
    with pytest.raises(ValueError, match="selected no parameter"):
        WeightDecay(model, include=lambda name, p: False)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: WeightDecay(m, init=0.0), "initial decay must be > 0"),
        (lambda m: WeightDecay(m, per="neuron"), "choose 'weight', 'layer' or 'global'"),
        (lambda m: WeightDecay(m, positive="abs"), "unknown constraint 'abs'"),
    ],
)
def test_bad_family_arguments_raise_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(nn.Linear(2, 2))


def test_example_weights_weight_each_example_and_need_per_example_losses():
    weights = ExampleWeights(5, init=2.0)
    losses = torch.tensor([1.0, 2.0])
    batch = (None, None, torch.tensor([0, 3]))
    assert float(weights.inner_loss(weights.tree(), {}, losses, batch).detach()) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="reduction='none'"):
        weights.inner_loss(weights.tree(), {}, losses.mean(), batch)
    assert math.isclose(float(weights.weights()[0].detach()), 2.0, rel_tol=1e-6)


def test_weight_decay_of_another_model_is_refused_with_the_shapes():
    decay = WeightDecay(nn.Linear(3, 4))
    other = dict(nn.Linear(3, 5).named_parameters())
    with pytest.raises(ValueError, match=r"decay for 'weight' is \(4, 3\) but the parameter is \(5, 3\)"):
        decay.penalty(decay.tree(), other)
