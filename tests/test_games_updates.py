"""The game update rules: complex momentum's two forms agree, reduce to known methods, and
refuse bad settings with one-line errors."""

import cmath
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nestopt as nest

F64 = torch.float64


def trees(seed, n=4):
    generator = torch.Generator().manual_seed(seed)
    params = {
        "a": torch.randn(3, 2, generator=generator, dtype=F64),
        "b": torch.randn(4, generator=generator, dtype=F64),
    }
    grads = [
        {k: torch.randn(v.shape, generator=generator, dtype=F64) for k, v in params.items()} for _ in range(n)
    ]
    return params, grads


def run(rule, params, grads):
    state = rule.init(params)
    for g in grads:
        params, state = rule.update(g, state, params)
    return params, state


def run_torch(optimizer, tensors, grads):
    for g in grads:
        for k, p in tensors.items():
            p.grad = g[k].clone()
        optimizer.step()
    return {k: p.detach().clone() for k, p in tensors.items()}


@given(
    lr=st.floats(1e-3, 1.0),
    magnitude=st.floats(0.0, 0.99),
    phase=st.floats(-math.pi, math.pi),
)
def test_complex_and_two_buffer_forms_give_identical_iterates(lr, magnitude, phase):
    beta = magnitude * cmath.exp(1j * phase)
    params, grads = trees(0, n=6)
    complex_params, complex_state = run(nest.complex_momentum(lr, beta), params, grads)
    real_params, real_state = run(nest.complex_momentum_two_buffer(lr, beta), params, grads)
    same = dict(rtol=1e-13, atol=1e-15)  # equal up to float64 rounding (complex kernels fuse differently)
    for k in params:
        assert torch.allclose(complex_params[k], real_params[k], **same)
        assert torch.allclose(complex_state["momentum"][k].real, real_state["momentum_real"][k], **same)
        assert torch.allclose(complex_state["momentum"][k].imag, real_state["momentum_imag"][k], **same)


@given(lr=st.floats(1e-3, 1.0), momentum=st.floats(0.0, 0.99))
def test_real_beta_is_torch_sgd_heavy_ball(lr, momentum):
    params, grads = trees(1)
    tensors = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = run_torch(torch.optim.SGD(tensors.values(), lr=lr, momentum=momentum), tensors, grads)
    got, _ = run(nest.complex_momentum(lr, momentum), params, grads)
    assert all(torch.allclose(got[k], expected[k], rtol=1e-12, atol=1e-14) for k in got)


@pytest.mark.parametrize("beta", [-0.5, -0.9, 0.3])
def test_negative_real_beta_is_heavy_ball_with_negative_momentum(beta):
    """torch.optim.SGD refuses momentum < 0; nestopt's sgd rule is the same formula without that check."""
    params, grads = trees(2)
    expected, _ = run(nest.sgd(0.1, momentum=beta), params, grads)
    got, _ = run(nest.complex_momentum(0.1, beta), params, grads)
    assert all(torch.allclose(got[k], expected[k], rtol=1e-12, atol=1e-14) for k in got)


@given(lr=st.floats(1e-4, 0.1), beta1=st.sampled_from([0.0, 0.5, 0.9]))
def test_complex_adam_with_real_beta1_is_torch_adam(lr, beta1):
    params, grads = trees(3)
    tensors = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = run_torch(torch.optim.Adam(tensors.values(), lr=lr, betas=(beta1, 0.999)), tensors, grads)
    got, _ = run(nest.complex_adam(lr, betas=(beta1, 0.999)), params, grads)
    assert all(torch.allclose(got[k], expected[k], rtol=1e-10, atol=1e-13) for k in got)


def test_complex_adam_moves_by_the_real_part_of_the_bias_corrected_complex_moment():
    beta1, beta2, lr, eps = 0.8 * cmath.exp(1j * math.pi / 8), 0.99, 0.01, 1e-8
    params, grads = trees(4, n=3)
    got, _ = run(nest.complex_adam(lr, (beta1, beta2), eps), params, grads)
    for k, w in params.items():
        m = torch.zeros_like(w, dtype=torch.complex128)
        v = torch.zeros_like(w)
        for t, g in enumerate(grads, start=1):
            m = beta1 * m + (1 - beta1) * g[k]
            v = beta2 * v + (1 - beta2) * g[k] ** 2
            w = w - lr * (m / (1 - beta1**t)).real / ((v / (1 - beta2**t)).sqrt() + eps)
        assert torch.allclose(got[k], w, rtol=1e-12, atol=1e-14)


def test_two_extragradient_calls_are_one_extragradient_step():
    """With g(w) = H w: w <- w - lr H (w - lr H w)."""
    H = torch.tensor([[0.0, 1.0], [-1.0, 0.5]], dtype=F64)
    w0, lr = torch.tensor([1.0, -2.0], dtype=F64), 0.3
    rule = nest.extragradient(lr)
    params, state = {"w": w0}, rule.init({"w": w0})
    for _ in range(2):
        params, state = rule.update({"w": H @ params["w"]}, state, params)
    assert torch.allclose(params["w"], w0 - lr * H @ (w0 - lr * H @ w0), rtol=1e-14)


def test_optimistic_steps_by_twice_the_gradient_minus_the_previous_one():
    params, grads = trees(5, n=3)
    got, _ = run(nest.optimistic(0.1), params, grads)
    for k, w in params.items():
        expected = w - 0.1 * grads[0][k]
        expected = expected - 0.1 * (2 * grads[1][k] - grads[0][k])
        expected = expected - 0.1 * (2 * grads[2][k] - grads[1][k])
        assert torch.allclose(got[k], expected, rtol=1e-14)


def test_default_beta_is_the_papers_recommendation():
    assert abs(nest.DEFAULT_BETA) == pytest.approx(0.9)
    assert cmath.phase(nest.DEFAULT_BETA) == pytest.approx(math.pi / 8)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: nest.complex_momentum(0.1, 1.0),
            ValueError,
            r"beta needs \|beta\| < 1, got \|beta\| = 1: shrink",
        ),
        (
            lambda: nest.complex_momentum(0.1, 0.8 + 0.8j),
            ValueError,
            r"got \|beta\| = 1.131: shrink it, e\.g\. 0\.9",
        ),
        (lambda: nest.complex_momentum_two_buffer(0.1, -1.5), ValueError, r"beta needs \|beta\| < 1"),
        (lambda: nest.complex_momentum(-0.1), ValueError, r"lr must be >= 0, got -0.1: pass a non-negative"),
        (lambda: nest.extragradient(-1.0), ValueError, r"lr must be >= 0, got -1.0"),
        (lambda: nest.optimistic(-1.0), ValueError, r"lr must be >= 0, got -1.0"),
        (lambda: nest.complex_adam(0.1, (1j, 0.999)), ValueError, r"betas\[0\] needs \|betas\[0\]\| < 1"),
        (
            lambda: nest.complex_adam(0.1, (0.5, 1.0)),
            ValueError,
            r"complex Adam needs 0 <= betas\[1\] < 1, got 1.0",
        ),
        (lambda: nest.complex_adam(0.1, eps=-1.0), ValueError, r"eps must be >= 0, got -1.0"),
    ],
)
def test_bad_settings_raise_one_line_errors_naming_the_fix(make, error, message):
    with pytest.raises(error, match=message):
        make()
