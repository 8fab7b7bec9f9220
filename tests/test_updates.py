"""The functional update rules reproduce torch.optim step for step, and the bridge round-trips."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nestopt as nest
from nestopt.updates import load_into_optimizer, rule_from_optimizer

F64 = torch.float64


def model_and_grads(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(F64)
    grads = [{k: torch.randn_like(p) for k, p in model.named_parameters()} for _ in range(4)]
    return model, grads


def run_torch(model, optimizer, grads):
    for g in grads:
        for k, p in model.named_parameters():
            p.grad = g[k].clone()
        optimizer.step()
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def run_rule(model, rule, grads):
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    state = rule.init(params)
    for g in grads:
        params, state = rule.update(g, state, params)
    return params


@given(
    lr=st.floats(1e-3, 0.5),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    dampening=st.sampled_from([0.0, 0.3]),
    nesterov=st.booleans(),
    weight_decay=st.sampled_from([0.0, 1e-2]),
)
def test_sgd_rule_matches_torch_optim_sgd(lr, momentum, dampening, nesterov, weight_decay):
    if nesterov and (momentum == 0 or dampening != 0):
        return  # torch refuses this combination
    model, grads = model_and_grads(0)
    settings = dict(
        lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay
    )
    expected = run_torch(model, torch.optim.SGD(model.parameters(), **settings), grads)
    model, _ = model_and_grads(0)
    got = run_rule(model, nest.sgd(**settings), grads)
    assert all(torch.allclose(got[k], expected[k], rtol=1e-12, atol=1e-14) for k in got)


@given(lr=st.floats(1e-4, 0.1), beta1=st.sampled_from([0.0, 0.9]), weight_decay=st.sampled_from([0.0, 1e-2]))
def test_adam_rule_matches_torch_optim_adam(lr, beta1, weight_decay):
    model, grads = model_and_grads(1)
    settings = dict(lr=lr, betas=(beta1, 0.999), eps=1e-8, weight_decay=weight_decay)
    expected = run_torch(model, torch.optim.Adam(model.parameters(), **settings), grads)
    model, _ = model_and_grads(1)
    got = run_rule(model, nest.adam(**settings), grads)
    assert all(torch.allclose(got[k], expected[k], rtol=1e-10, atol=1e-13) for k in got)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.01),
    ],
)
def test_rule_from_optimizer_continues_a_started_optimizer(make):
    """Two torch steps, then two rule steps from the extracted state, equal four torch steps;
    writing back the rule's state lets torch continue identically."""
    model, grads = model_and_grads(2)
    expected = run_torch(model, make(model.parameters()), grads + grads)
    model, _ = model_and_grads(2)
    optimizer = make(model.parameters())
    run_torch(model, optimizer, grads[:2])
    rule, state = rule_from_optimizer(optimizer, model)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    for g in grads[2:]:
        params, state = rule.update(g, state, params)
    load_into_optimizer(optimizer, model, params, state)
    got = run_torch(model, optimizer, grads)
    assert all(torch.allclose(got[k], expected[k], rtol=1e-12, atol=1e-14) for k in got)


def test_unsupported_optimizer_names_the_alternatives():
    model, _ = model_and_grads(0)
    with pytest.raises(
        TypeError, match=r"supports torch.optim.SGD and torch.optim.Adam, got RMSprop: use IFT"
    ):
        rule_from_optimizer(torch.optim.RMSprop(model.parameters()), model)


def test_adam_rule_differentiates_without_nan_at_zero_gradients():
    rule = nest.adam(0.1)
    lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
    params = {"w": torch.tensor([1.0, 2.0], dtype=F64)}
    state = rule.init(params)
    g = {"w": torch.tensor([0.0, 1.0], dtype=F64) * lr}
    new, _ = rule.update(g, state, params)
    (d,) = torch.autograd.grad(new["w"].sum(), lr)
    assert torch.isfinite(d)
