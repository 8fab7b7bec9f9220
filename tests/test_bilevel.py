"""The Bilevel trainer on real modules: buffers, dropout, both hypergradient strategies,
warm/cold start, divergence, bad input, resume and flat memory."""

import gc
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import nestopt as nest
from nestopt.bilevel import IFT, Bilevel, DivergenceError, Unrolled
from nestopt.data import BatchStream
from nestopt.hparams import ExampleWeights, HyperParameters, WeightDecay


def ce_per_example(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1], reduction="none")


def ce(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def dataset(n=256, features=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def streams(seed=0):
    x, y = dataset(seed=seed)
    return BatchStream(x[:128], y[:128], batch_size=32, seed=seed), BatchStream(
        x[128:], y[128:], batch_size=64, seed=seed + 1
    )


def bn_dropout_model():
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def make_trainer(model=None, family="decay", strategy=None, start="warm", inner_lr=0.1, **kwargs):
    torch.manual_seed(0)
    model = model or bn_dropout_model()
    hparams = WeightDecay(model, init=1e-3) if family == "decay" else ExampleWeights(128)
    return Bilevel(
        model,
        hparams,
        inner_optimizer=torch.optim.SGD(model.parameters(), lr=inner_lr, momentum=0.9),
        outer_optimizer=torch.optim.Adam(hparams.parameters(), lr=0.05),
        train_loss=ce_per_example,
        val_loss=ce,
        hypergradient=strategy or IFT(nest.neumann(5, 0.05), compile=False),
        inner_steps=3,
        start=start,
        **kwargs,
    )


@pytest.mark.parametrize("family", ["decay", "examples"])
@pytest.mark.parametrize(
    "strategy",
    [
        IFT(nest.neumann(5, 0.05), compile=False),
        IFT(nest.cg(5, damping=1.0), mixed_batches=1, compile=False),
        Unrolled(),
        Unrolled(window=2),
    ],
)
def test_model_with_batchnorm_and_dropout_gets_finite_hypergradients(family, strategy):
    trainer = make_trainer(family=family, strategy=strategy)
    train, val = streams()
    before = {k: v.clone() for k, v in trainer.hparams.state_dict().items()}
    history = trainer.fit(train, val, outer_steps=4)
    assert len(history) == 4 and all(r["hypergrad_norm"] > 0 for r in history)
    after = trainer.hparams.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_batchnorm_statistics_move_only_in_inner_training_steps():
    trainer = make_trainer()
    train, val = streams()
    trainer.inner_step(next(train))
    running = trainer.model[1].running_mean.clone()
    tracked = int(trainer.model[1].num_batches_tracked)
    nest.implicit(
        trainer.inner_loss_fn,
        trainer.val_loss_fn,
        trainer.params(),
        trainer.hparams.tree(),
        next(train),
        next(val),
    )
    assert torch.equal(trainer.model[1].running_mean, running)
    assert int(trainer.model[1].num_batches_tracked) == tracked
    trainer.outer_step(train, val)
    assert int(trainer.model[1].num_batches_tracked) == tracked + 3


def test_ift_and_unrolled_trainers_follow_the_same_inner_trajectory():
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    ift = make_trainer(model=model, strategy=IFT(nest.neumann(3, 0.05), compile=False))
    unrolled = make_trainer(model=__import__("copy").deepcopy(model), strategy=Unrolled())
    a_train, a_val = streams()
    b_train, b_val = streams()
    ift.outer_step(a_train, a_val)
    unrolled.outer_step(b_train, b_val)
    # IFT also drew one batch for its HVPs; the weights after the 3 inner steps must agree
    for (k, p), q in zip(ift.model.named_parameters(), unrolled.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), k


def test_trainer_hypergradient_equals_the_functional_one():
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    hparams = WeightDecay(model, init=1e-2).double()
    solver = nest.cg(20, tol=1e-12, damping=1.0)
    trainer = Bilevel(
        model,
        hparams,
        inner_optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        outer_optimizer=torch.optim.SGD(hparams.parameters(), lr=1.0),
        train_loss=ce_per_example,
        val_loss=ce,
        hypergradient=IFT(solver, compile=False),
        inner_steps=1,
    )
    x, y = dataset()
    x = x.double()
    train, val = BatchStream(x[:128], y[:128], batch_size=32), BatchStream(x[128:], y[128:], batch_size=64)
    raw_before = {k: v.clone() for k, v in hparams.tree().items()}
    trainer.outer_step(train, val)
    hvp_batch, val_batch = (
        BatchStream(x[:128], y[:128], batch_size=32).take(2)[1],
        BatchStream(x[128:], y[128:], batch_size=64).take(1)[0],
    )

    def train_loss(p, h, b):
        logits = torch.func.functional_call(model, p, (b[0],))
        return F.cross_entropy(logits, b[1]) + 0.5 * sum(
            (h[f"raw.{k.replace('.', '__')}"].exp() * p[k] ** 2).sum() for k in p
        )

    def val_loss(p, h, b):
        return F.cross_entropy(torch.func.functional_call(model, p, (b[0],)), b[1])

    expected = nest.implicit(
        train_loss, val_loss, trainer.params(), raw_before, hvp_batch, val_batch, solver=solver
    ).grads
    step = {k: raw_before[k] - hparams.tree()[k] for k in raw_before}  # plain SGD, lr 1: step = grad
    assert all(torch.allclose(step[k], expected[k], rtol=1e-9, atol=1e-14) for k in step)


def test_cold_start_reinitialises_weights_before_every_outer_step():
    seen = []

    def reinit(model):
        seen.append(True)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    trainer = make_trainer(start="cold")
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    train, val = streams()
    trainer.outer_step(train, val)
    trainer._reinitialise()
    assert all(torch.equal(initial[k], v) for k, v in trainer.model.state_dict().items())
    custom = make_trainer(start="cold", reinit=reinit)
    custom.fit(train, val, outer_steps=2)
    assert len(seen) == 2


@pytest.mark.parametrize("start", ["warm", "cold"])
@pytest.mark.parametrize("strategy", [IFT(nest.neumann(4, 0.05), compile=False), Unrolled(window=2)])
def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, start, strategy):
    full = make_trainer(start=start, strategy=strategy)
    train, val = streams()
    full.fit(train, val, outer_steps=6)

    first = make_trainer(start=start, strategy=strategy)
    train, val = streams()
    first.fit(train, val, outer_steps=3, checkpoint=tmp_path / "ckpt.pt")
    torch.manual_seed(12345)  # the resumed process starts from a different RNG state
    resumed = make_trainer(start=start, strategy=strategy)
    train, val = streams()
    resumed.fit(train, val, outer_steps=6, checkpoint=tmp_path / "ckpt.pt", resume=True)

    for a, b in ((full.model, resumed.model), (full.hparams, resumed.hparams)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), k
    assert [r["val_loss"] for r in full.history] == [r["val_loss"] for r in resumed.history]


def test_divergence_stops_with_the_step_and_the_quantity():
    trainer = make_trainer(model=nn.Sequential(nn.Linear(6, 2)), inner_lr=1e6)
    train, val = streams()
    with pytest.raises(
        DivergenceError, match=r"inner (loss|gradient) \(inner step \d\) is NaN or infinite at outer step \d+"
    ):
        trainer.fit(train, val, outer_steps=50)


def test_nan_in_validation_data_names_the_validation_loss():
    trainer = make_trainer(model=nn.Sequential(nn.Linear(6, 2)))
    train, val = streams()
    x, y = dataset()
    poisoned = BatchStream(torch.full_like(x[:64], float("nan")), y[:64], batch_size=64)
    trainer.outer_step(train, val)
    with pytest.raises(DivergenceError, match="validation loss is NaN or infinite at outer step 1"):
        trainer.outer_step(train, poisoned)


class IgnoresItsHyperparameters(HyperParameters):
    def __init__(self):
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(()))


def test_bad_trainer_input_raises_one_line_errors():
    model = nn.Linear(6, 2)
    decay = WeightDecay(model)
    ok = dict(
        inner_optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        outer_optimizer=torch.optim.Adam(decay.parameters()),
        train_loss=ce_per_example,
        val_loss=ce,
    )
    with pytest.raises(
        ValueError, match=r"inner_optimizer holds a tensor that is not in model.parameters\(\)"
    ):
        Bilevel(
            model, decay, **{**ok, "inner_optimizer": torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)}
        )
    with pytest.raises(ValueError, match="outer_optimizer holds a tensor that is not in hparams"):
        Bilevel(model, decay, **{**ok, "outer_optimizer": torch.optim.Adam(model.parameters())})
    with pytest.raises(ValueError, match="start='lukewarm'"):
        Bilevel(model, decay, **ok, start="lukewarm")
    with pytest.raises(TypeError, match="dtype mismatch"):
        double = WeightDecay(model).double()
        Bilevel(model, double, **{**ok, "outer_optimizer": torch.optim.Adam(double.parameters())})
    ignoring = IgnoresItsHyperparameters()
    for compiled in (False, True):  # the compiled path checks its inputs eagerly on first use
        trainer = Bilevel(
            model,
            ignoring,
            **{**ok, "outer_optimizer": torch.optim.Adam(ignoring.parameters())},
            hypergradient=IFT(compile=compiled),
        )
        with pytest.raises(ValueError, match=r"\['raw'\] reach neither"):
            trainer.outer_step(*streams())


def live_tensors():
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some deprecated torch module proxies warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("strategy", [IFT(nest.neumann(3, 0.05), compile=False), Unrolled()])
def test_memory_stays_flat_over_hundreds_of_outer_steps(strategy):
    trainer = make_trainer(strategy=strategy)
    train, val = streams()
    trainer.fit(train, val, outer_steps=20)
    early = live_tensors()
    trainer.fit(train, val, outer_steps=220)
    assert live_tensors() <= early


def test_compiled_hypergradient_trains_like_the_eager_one():
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    eager = make_trainer(model=model, strategy=IFT(nest.neumann(4, 0.05), compile=False))
    compiled = make_trainer(
        model=__import__("copy").deepcopy(model), strategy=IFT(nest.neumann(4, 0.05), compile=True)
    )
    for trainer in (eager, compiled):
        trainer.fit(*streams(), outer_steps=3)
    for (k, a), b in zip(
        eager.hparams.state_dict().items(), compiled.hparams.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), k
    # with dropout the compiled code draws other masks (inductor's RNG) but trains all the same
    dropout = make_trainer(strategy=IFT(nest.neumann(4, 0.05), compile=True))
    assert all(r["hypergrad_norm"] > 0 for r in dropout.fit(*streams(), outer_steps=3))


@pytest.mark.parametrize("compiled", [False, True])
def test_cg_refuses_an_indefinite_hessian_in_the_trainer_compiled_or_not(compiled):
    trainer = make_trainer(
        model=nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)),
        strategy=IFT(nest.cg(20, damping=0.0), compile=compiled),
    )
    with pytest.raises(nest.IndefiniteOperatorError, match="not positive definite"):
        trainer.fit(*streams(), outer_steps=20)
