"""The torch.optim faces: they are their rules, save and resume mid-run, follow LR schedulers,
and refuse bad settings with the rules' one-line errors."""

import copy
import io

import pytest
import torch
from torch import nn

import nestopt as nest

F64 = torch.float64
BETA = 0.8 * nest.DEFAULT_BETA

# (torch.optim face, the pure rule it wraps)
FACES = [
    pytest.param(
        lambda ps: nest.ComplexMomentum(ps, lr=0.05, beta=BETA), nest.complex_momentum(0.05, BETA), id="cm"
    ),
    pytest.param(
        lambda ps: nest.ComplexMomentum(ps, lr=0.05, beta=-0.5), nest.sgd(0.05, momentum=-0.5), id="neg"
    ),
    pytest.param(lambda ps: nest.ComplexAdam(ps, lr=0.01), nest.complex_adam(0.01), id="adam"),
    pytest.param(lambda ps: nest.ExtraGradient(ps, lr=0.05), nest.extragradient(0.05), id="eg"),
    pytest.param(lambda ps: nest.ExtraAdam(ps, lr=0.01), nest.extrapolated(nest.adam(0.01)), id="extra-adam"),
    pytest.param(lambda ps: nest.OptimisticGradient(ps, lr=0.05), nest.optimistic(0.05), id="ogd"),
]


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()


def batches(n, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 3, generator=generator, dtype=F64), torch.randn(8, 1, generator=generator, dtype=F64))
        for _ in range(n)
    ]


def train(net, optimizer, data, scheduler=None):
    for x, y in data:
        optimizer.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return {k: p.detach().clone() for k, p in net.named_parameters()}


def mse_grad(net, params, x, y):
    return torch.func.grad(lambda p: nn.functional.mse_loss(torch.func.functional_call(net, p, (x,)), y))(
        params
    )


def close(a, b, rtol=1e-12):
    return all(torch.allclose(a[k], b[k], rtol=rtol, atol=1e-14) for k in a)


@pytest.mark.parametrize("make, rule", FACES)
def test_face_takes_the_same_steps_as_its_rule(make, rule):
    net, data = model(), batches(6)
    got = train(net, make(net.parameters()), data)
    net = model()
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    state = rule.init(params)
    for x, y in data:
        grads = mse_grad(net, params, x, y)
        params, state = rule.update(grads, state, params)
    assert close(got, params, rtol=1e-10)


@pytest.mark.parametrize("make, rule", FACES)
def test_state_dict_saved_mid_run_continues_identically(make, rule):
    data = batches(8)
    net = model()
    optimizer = make(net.parameters())
    expected = train(net, optimizer, data)

    net = model()
    optimizer = make(net.parameters())
    train(net, optimizer, data[:3])
    buffer = io.BytesIO()
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    net = model(seed=123)  # fresh weights and optimizer, then restored
    optimizer = make(net.parameters())
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    assert close(train(net, optimizer, data[3:]), expected, rtol=0)


def test_complex_momentum_state_is_real_so_load_state_dict_keeps_the_imaginary_part():
    net = model()
    optimizer = nest.ComplexMomentum(net.parameters(), lr=0.05)
    train(net, optimizer, batches(2))
    restored = nest.ComplexMomentum(net.parameters(), lr=0.05)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for p in net.parameters():
        assert restored.state[p]["momentum_imag"].abs().sum() > 0
        assert torch.equal(restored.state[p]["momentum_imag"], optimizer.state[p]["momentum_imag"])


def test_real_beta_with_lr_scheduler_matches_torch_sgd_with_the_same_scheduler():
    data = batches(9)

    def scheduled(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)

    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.7)
    expected = train(net, optimizer, data, scheduled(optimizer))
    net = model()
    optimizer = nest.ComplexMomentum(net.parameters(), lr=0.1, beta=0.7)
    got = train(net, optimizer, data, scheduled(optimizer))
    assert close(got, expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_complex_momentum_follows_a_scheduler_step_for_step():
    data = batches(6)
    net = model()
    optimizer = nest.ComplexMomentum(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 / (1 + t))
    got = train(net, optimizer, data, scheduler)
    net = model()
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    state = nest.complex_momentum(0.1).init(params)
    for t, (x, y) in enumerate(data):
        grads = mse_grad(net, params, x, y)
        params, state = nest.complex_momentum(0.1 / (1 + t)).update(grads, state, params)
    assert close(got, params)


def test_param_groups_keep_their_own_settings():
    net = model()
    optimizer = nest.ComplexMomentum(
        [{"params": net[0].parameters()}, {"params": net[2].parameters(), "beta": -0.3, "lr": 0.2}], lr=0.05
    )
    assert [g["beta"] for g in optimizer.param_groups] == [nest.DEFAULT_BETA, -0.3]
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.2]


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda ps: nest.ComplexMomentum(ps, lr=0.1, beta=1.0),
            r"beta needs \|beta\| < 1, got \|beta\| = 1: shrink",
        ),
        (lambda ps: nest.ComplexMomentum(ps, lr=-0.1), r"lr must be >= 0, got -0.1"),
        (lambda ps: nest.ComplexAdam(ps, betas=(0.99j + 0.2, 0.999)), r"betas\[0\] needs \|betas\[0\]\| < 1"),
        (lambda ps: nest.ExtraGradient(ps, lr=-1.0), r"lr must be >= 0, got -1.0"),
        (lambda ps: nest.OptimisticGradient(ps, lr=-1.0), r"lr must be >= 0, got -1.0"),
        (lambda ps: nest.ExtraAdam(ps, betas=(1.0, 0.999)), r"Extra-Adam needs .* 0 <= betas < 1"),
        (
            lambda ps: nest.ComplexMomentum([{"params": ps, "beta": 2j}], lr=0.1),
            r"beta needs \|beta\| < 1, got \|beta\| = 2",
        ),
    ],
)
def test_bad_settings_raise_the_rules_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(list(model().parameters()))
