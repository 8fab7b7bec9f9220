"""The GAN recipes (gan-mixture, gan-digits) and their command, on tiny configurations."""

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from nestopt.bilevel import DivergenceError
from nestopt.cli import main
from nestopt.games import Game
from nestopt.recipes import RECIPES, _gan, gan_digits, gan_mixture

MIXTURE = dict(steps=40, seeds=2, hidden=16, eval_samples=200, eval_every=20, checkpoint_every=10)
DIGITS = dict(
    steps=20,
    seeds=1,
    channels=4,
    classifier_steps=30,
    n_heldout=100,
    eval_samples=100,
    eval_every=10,
    checkpoint_every=10,
)
PNG = b"\x89PNG\r\n\x1a\n"


def args(config: dict) -> list[str]:
    return [x for k, v in config.items() for x in ("--" + k.replace("_", "-"), str(v))]


def test_both_recipes_are_registered_with_tables_of_mean_and_std():
    assert RECIPES["gan-mixture"].module is gan_mixture
    assert RECIPES["gan-digits"].module is gan_digits
    assert [key for _, key, _ in gan_mixture.TABLE] == [
        "modes_mean",
        "modes_std",
        "high_quality_mean",
        "high_quality_std",
        "w1_mean",
        "w1_std",
        "seconds",
    ]
    assert [key for _, key, _ in gan_digits.TABLE] == [
        "fd_mean",
        "fd_std",
        "classes_mean",
        "classes_std",
        "seconds",
    ]


def test_mixture_recipe_writes_its_run_folder_with_every_optimizer_and_the_reference(tmp_path):
    result = gan_mixture.run(gan_mixture.Config(**MIXTURE), tmp_path / "mix")
    out = tmp_path / "mix"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    names = ["Adam (β1=0.9)", "complex Adam (β1=0.9·e^(iπ/8))", "Extra-Adam (β1=0.9)"]
    assert list(metrics) == [*names, _gan.REFERENCE]
    for name in names:
        m = metrics[name]
        for key in gan_mixture.KEYS:
            assert {f"{key}_mean", f"{key}_std", f"{key}_per_seed"} <= set(m)
            assert len(m[f"{key}_per_seed"]) == 2
        assert 0 <= m["modes_mean"] <= 8 and 0 <= m["high_quality_mean"] <= 1 and m["w1_mean"] > 0
        assert m["seeds"] == 2 and m["seconds"] > 0
        assert m["order"] == ("simultaneous" if name.startswith("Extra") else "alternating")
    assert metrics[_gan.REFERENCE]["modes_mean"] == 8 and metrics[_gan.REFERENCE]["high_quality_mean"] > 0.95
    assert json.loads((out / "config.json").read_text())["steps"] == 40
    with (out / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["optimizer"], r["seed"], r["step"]) for r in rows} == {
        (n, str(s), str(t)) for n in names for s in (0, 1) for t in (20, 40)
    }
    assert {"discriminator_loss", "generator_loss", "modes", "high_quality", "w1"} <= set(rows[0])
    for png in ("samples.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == PNG
    assert not list((out / "checkpoints").iterdir())  # finished runs keep only their parts


def test_digits_recipe_writes_fd_per_optimizer_and_a_sample_grid_each(tmp_path):
    result = gan_digits.run(gan_digits.Config(**DIGITS), tmp_path / "dig")
    out = tmp_path / "dig"
    metrics = result.metrics
    names = ["Adam (β1=0.5)", "Adam (β1=0.9)", "complex Adam (β1=0.9·e^(iπ/8))"]
    assert list(metrics) == [*names, _gan.REFERENCE]
    for name in names:
        assert {"fd_mean", "fd_std", "fd_per_seed", "classes_mean", "classes_std", "seconds"} <= set(
            metrics[name]
        )
        assert metrics[name]["fd_mean"] > metrics[_gan.REFERENCE]["fd_mean"] > 0  # 20 steps: far from data
    assert metrics[_gan.REFERENCE]["classifier_heldout_accuracy"] > 0.5
    for png in (
        "samples.png",
        "curves.png",
        "samples_adam-0.5.png",
        "samples_adam-0.9.png",
        "samples_complex-adam.png",
    ):
        assert (out / png).read_bytes()[:8] == PNG
    assert (out / "parts" / "classifier.pt").exists()


def crash_after(monkeypatch, calls: int) -> None:
    original, count = Game.step, [0]

    def step(self, *a, **kw):
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(Game, "step", step)


def without_seconds(metrics: dict) -> dict:
    return {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in metrics.items()}


def test_interrupted_mixture_run_resumes_from_its_parts_and_checkpoint_to_the_same_result(
    tmp_path, monkeypatch
):
    config = gan_mixture.Config(**MIXTURE)
    expected = gan_mixture.run(config, tmp_path / "full").metrics
    # crash in the second optimizer's second seed, at step 15 (its checkpoint is at step 10)
    with monkeypatch.context() as patch:
        crash_after(patch, 2 * 40 + 40 + 14)
        with pytest.raises(KeyboardInterrupt):
            gan_mixture.run(config, tmp_path / "cut")
    cut = tmp_path / "cut"
    assert len(list((cut / "parts").iterdir())) == 3
    assert (cut / "checkpoints" / "complex-adam-seed1.pt").exists()
    result = CliRunner().invoke(main, ["run", "gan-mixture", "--resume", str(cut)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Extra-Adam" in result.output and "real data" in result.output  # the table
    resumed = json.loads((cut / "metrics.json").read_text())
    assert without_seconds(resumed) == without_seconds(json.loads(json.dumps(expected)))


def test_interrupted_digits_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = gan_digits.Config(**{**DIGITS, "steps": 12, "checkpoint_every": 5})
    expected = gan_digits.run(config, tmp_path / "full").metrics
    with monkeypatch.context() as patch:
        crash_after(patch, 12 + 7)
        with pytest.raises(KeyboardInterrupt):
            gan_digits.run(config, tmp_path / "cut")
    resumed = gan_digits.run(config, tmp_path / "cut").metrics
    assert without_seconds(resumed) == without_seconds(expected)


def test_a_nan_loss_stops_the_run_with_the_step_and_the_player(tmp_path, monkeypatch):
    original = Game.step

    def step(self, *a, **kw):
        losses = original(self, *a, **kw)
        return {**losses, "generator": torch.tensor(float("nan"))}

    monkeypatch.setattr(Game, "step", step)
    with pytest.raises(DivergenceError, match="generator loss is nan at step 1 of Adam"):
        gan_mixture.run(gan_mixture.Config(**MIXTURE), tmp_path / "nan")
    result = CliRunner().invoke(main, ["run", "gan-mixture", *args(MIXTURE), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 1 and "--resume" in result.output


def test_bad_options_are_one_line_usage_errors(tmp_path):
    for recipe, extra, message in [
        ("gan-mixture", ["--std", "0"], "--std > 0"),
        ("gan-mixture", ["--beta-magnitude", "1"], "--beta-magnitude must be in [0, 1), got 1.0"),
        ("gan-mixture", ["--adam-beta1s", "1.2"], "--adam-beta1s must be distinct values in [0, 1)"),
        ("gan-digits", ["--steps", "0"], "--steps must be >= 1, got 0"),
        ("gan-digits", ["--order", "sideways"], "sideways"),
    ]:
        result = CliRunner().invoke(main, ["run", recipe, *extra, "--out", str(tmp_path)])
        assert result.exit_code == 2 and message in result.output, result.output


def test_snapshot_steps_are_spread_evenly_and_end_at_the_last_step():
    schedule = _gan.Schedule(steps=4000, batch_size=1, eval_every=1, snapshots=4, checkpoint_every=1, seeds=1)
    assert schedule.snapshot_steps() == [1000, 2000, 3000, 4000]
    assert _gan.Schedule(3, 1, 1, 5, 1, 1).snapshot_steps() == [1, 2, 3]
