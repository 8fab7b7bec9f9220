"""Hypergradient facts beyond the registry: the IFT paper's theorem, convergence of unrolling,
finite differences on small networks, and one-line errors for bad input."""

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import nestopt as nest
from nestopt.hparams import ExampleWeights, WeightDecay
from problems import relative_error, ridge

F64 = torch.float64


@pytest.fixture(scope="module")
def quadratic():
    return ridge(features=20, n_train=80, n_val=40)


@pytest.mark.parametrize("i", [0, 1, 3, 10, 40])
def test_neumann_with_i_products_equals_unrolling_i_plus_1_sgd_steps_from_the_optimum(quadratic, i):
    """Lorraine, Vicol & Duvenaud (2020), Theorem 1, on a quadratic inner problem: i + 1 Neumann
    terms (i Hessian-vector products) with alpha = lr equal i + 1 unrolled SGD steps."""
    p = quadratic
    neumann = nest.implicit(
        p.train_loss,
        p.val_loss,
        p.params,
        p.hparams,
        p.train_batch,
        p.val_batch,
        solver=nest.neumann(steps=i, alpha=p.lr),
    ).grads
    unrolled = nest.unrolled(
        p.train_loss,
        p.val_loss,
        p.params,
        p.hparams,
        [p.train_batch] * (i + 1),
        p.val_batch,
        rule=nest.sgd(p.lr),
    ).grads
    assert relative_error(neumann, unrolled) <= 1e-10


def test_unrolling_from_scratch_converges_to_the_exact_hypergradient(quadratic):
    p = quadratic
    zero = {"w": torch.zeros_like(p.params["w"])}
    errors = []
    for steps in (20, 80, 320):
        grads = nest.unrolled(
            p.train_loss,
            p.val_loss,
            zero,
            p.hparams,
            [p.train_batch] * steps,
            p.val_batch,
            rule=nest.sgd(p.lr),
        ).grads
        errors.append(relative_error(grads, p.reference))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] <= 1e-8


def test_truncated_with_the_full_window_equals_unrolled_and_shorter_windows_differ(quadratic):
    p = quadratic
    zero = {"w": torch.zeros_like(p.params["w"])}
    args = (p.train_loss, p.val_loss, zero, p.hparams, [p.train_batch] * 12, p.val_batch)
    full = nest.unrolled(*args, rule=nest.sgd(p.lr)).grads
    same = nest.truncated(*args, rule=nest.sgd(p.lr), window=12).grads
    short = nest.truncated(*args, rule=nest.sgd(p.lr), window=3)
    assert relative_error(same, full) == 0.0
    assert relative_error(short.grads, full) > 1e-3
    # the forward trajectory does not depend on the window
    assert torch.equal(short.params["w"], nest.unrolled(*args, rule=nest.sgd(p.lr)).params["w"])


# ------------------------------------------------------------------ tiny networks, float64 FD
def tiny_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, 2, (n,), generator=g), torch.arange(n)


def losses_of(model, family):
    def train_loss(p, h, batch):
        logits = functional_call(model, p, (batch[0],))
        return family.inner_loss(h, p, F.cross_entropy(logits, batch[1], reduction="none"), batch)

    def val_loss(p, h, batch):
        return F.cross_entropy(functional_call(model, p, (batch[0],)), batch[1])

    return train_loss, val_loss


FAMILIES = {
    "per-weight-decay": lambda model: WeightDecay(model, init=0.05, per="weight"),
    "per-layer-decay": lambda model: WeightDecay(model, init=0.05, per="layer", positive="softplus"),
    "example-weights": lambda model: ExampleWeights(16, init=1.0, dtype=F64),
}


def perturbed(tree, direction, eps):
    return {k: v + eps * direction[k] for k, v in tree.items()}


def random_direction(tree, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in tree.items()}


def directional(grads, direction):
    return float(sum((grads[k] * direction[k]).sum() for k in grads))


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
@pytest.mark.parametrize("rule_name", ["sgd-momentum", "adam"])
def test_unrolled_hypergradient_matches_float64_central_differences(family_name, rule_name):
    model = tiny_mlp()
    family = FAMILIES[family_name](model).to(F64)
    train_loss, val_loss = losses_of(model, family)
    params = {k: v.detach() for k, v in model.named_parameters()}
    hparams = family.tree()
    rule = nest.sgd(0.3, momentum=0.9) if rule_name == "sgd-momentum" else nest.adam(0.05)
    batches = [data(16, seed) for seed in range(6)]
    val = data(32, 100)

    def objective(h):
        return float(nest.unrolled(train_loss, val_loss, params, h, batches, val, rule=rule).val_loss)

    grads = nest.unrolled(train_loss, val_loss, params, hparams, batches, val, rule=rule).grads
    u = random_direction(hparams, 7)
    eps = 1e-5
    fd = (objective(perturbed(hparams, u, eps)) - objective(perturbed(hparams, u, -eps))) / (2 * eps)
    assert directional(grads, u) == pytest.approx(fd, rel=1e-6, abs=1e-10)


def newton_optimum(train_loss, params, hparams, batch):
    keys = list(params)

    def flat(theta):
        return train_loss(nest.tree.tree_unflatten(theta, params), hparams, batch)

    theta = nest.tree.tree_flatten(params).clone()
    for _ in range(100):
        g = torch.func.grad(flat)(theta)
        if float(g.norm()) < 1e-14:
            break
        theta = theta - torch.linalg.solve(torch.func.hessian(flat)(theta), g)
    assert float(torch.func.grad(flat)(theta).norm()) < 1e-12
    return {k: v.clone() for k, v in nest.tree.tree_unflatten(theta, {k: params[k] for k in keys}).items()}


@pytest.mark.parametrize("family_name", ["per-weight-decay", "example-weights"])
def test_implicit_hypergradient_of_a_tiny_mlp_matches_central_differences(family_name):
    """At an exact inner optimum (Newton, float64) the IFT hypergradient with an exact solve is
    the true derivative of val_loss(w*(λ)); finite differences re-solve the inner problem."""
    model = tiny_mlp()
    family = FAMILIES[family_name](model).to(F64)
    if family_name == "example-weights":  # keep the inner problem strongly convex
        family = DecayedExampleWeights(family)
    train_loss, val_loss = losses_of(model, family)
    start = {k: 0.1 * v.detach() for k, v in model.named_parameters()}
    hparams = family.tree()
    batch, val = data(16, 1), data(32, 2)
    w_star = newton_optimum(train_loss, start, hparams, batch)
    grads = nest.implicit(train_loss, val_loss, w_star, hparams, batch, val, solver=nest.exact()).grads

    def objective(h):
        return float(val_loss(newton_optimum(train_loss, w_star, h, batch), h, val))

    u = random_direction(hparams, 3)
    eps = 1e-5
    fd = (objective(perturbed(hparams, u, eps)) - objective(perturbed(hparams, u, -eps))) / (2 * eps)
    assert directional(grads, u) == pytest.approx(fd, rel=1e-7, abs=1e-11)


class DecayedExampleWeights(nn.Module):
    """Example weights plus a fixed L2 term (strong convexity for Newton); same hparam tree."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def tree(self):
        return self.inner.tree()

    def inner_loss(self, hparams, params, losses, batch):
        penalty = 0.5 * 0.05 * sum((v**2).sum() for v in params.values())
        return self.inner.inner_loss(hparams, params, losses, batch) + penalty


# ------------------------------------------------------------------ bad input
def simple_problem():
    params = {"w": torch.ones(3)}
    hparams = {"a": torch.tensor(0.1)}

    def train_loss(p, h, b):
        return ((p["w"] - 1) ** 2).sum() + h["a"] * (p["w"] ** 2).sum()

    def val_loss(p, h, b):
        return (p["w"] ** 2).sum()

    return train_loss, val_loss, params, hparams


def test_hyperparameter_not_reaching_the_losses_is_named():
    train_loss, val_loss, params, _ = simple_problem()
    hparams = {"a": torch.tensor(0.1), "unused": torch.tensor(1.0)}
    with pytest.raises(ValueError, match=r"\['unused'\] reach neither"):
        nest.implicit(train_loss, val_loss, params, hparams, None, None)
    with pytest.raises(ValueError, match="no hyperparameter reaches val_loss"):
        nest.unrolled(
            lambda p, h, b: ((p["w"] - 1) ** 2).sum(),
            val_loss,
            params,
            {"unused": torch.tensor(1.0)},
            [None],
            None,
            rule=nest.sgd(0.1),
        )


def test_non_scalar_loss_is_refused():
    _, val_loss, params, hparams = simple_problem()
    with pytest.raises(ValueError, match=r"train_loss must return a scalar tensor, got \(3,\).*\.mean\(\)"):
        nest.implicit(lambda p, h, b: p["w"] * h["a"], val_loss, params, hparams, None, None)


@pytest.mark.parametrize(
    ("params", "hparams", "message"),
    [
        (
            {"w": torch.ones(3, dtype=torch.long)},
            {"a": torch.tensor(0.1)},
            r"params\['w'\] has integer dtype.*\.float\(\)",
        ),
        ({"w": torch.ones(3)}, {"a": torch.tensor(1)}, r"hparams\['a'\] has integer dtype"),
        ({"w": torch.ones(3)}, {"a": torch.tensor(0.1, dtype=F64)}, r"dtype mismatch.*one dtype"),
        ({"w": torch.ones(3, device="meta")}, {"a": torch.tensor(0.1)}, r"device mismatch.*\.to\(device\)"),
        ([torch.ones(3)], {"a": torch.tensor(0.1)}, r"params must be a non-empty dict\[str, Tensor\]"),
    ],
)
def test_bad_trees_raise_one_line_errors_naming_the_fix(params, hparams, message):
    train_loss, val_loss, _, _ = simple_problem()
    with pytest.raises((TypeError, ValueError), match=message) as info:
        nest.implicit(train_loss, val_loss, params, hparams, None, None)
    assert "\n" not in str(info.value)


def test_unrolled_window_must_fit_the_steps():
    train_loss, val_loss, params, hparams = simple_problem()
    with pytest.raises(ValueError, match="window=5 must be between 1 and the number of steps"):
        nest.unrolled(train_loss, val_loss, params, hparams, [None] * 3, None, rule=nest.sgd(0.1), window=5)


def test_neumann_hypergradient_error_falls_like_rho_to_the_steps(quadratic):
    """Error of the hypergradient = Mᵀ (I - αH)^n H⁻¹ ∂L_V/∂w: it falls geometrically with the
    contraction factor rho = max |1 - α λ_i| of the series (asymptotically exactly rho^n)."""
    p = quadratic

    def error(steps):
        grads = nest.implicit(
            p.train_loss,
            p.val_loss,
            p.params,
            p.hparams,
            p.train_batch,
            p.val_batch,
            solver=nest.neumann(steps=steps, alpha=p.lr),
        ).grads
        return relative_error(grads, p.reference)

    errors = {n: error(n) for n in (10, 20, 40, 80)}
    assert errors[10] > errors[20] > errors[40] > errors[80]
    assert errors[80] / errors[40] == pytest.approx(p.rho**40, rel=0.2)
