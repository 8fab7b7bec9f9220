"""The weight-decay recipe and the command line, on a tiny configuration."""

import csv
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nestopt import bilevel
from nestopt.cli import main
from nestopt.recipes import RECIPES, weight_decay

TINY = dict(
    outer_steps=6, hidden=16, n_train=120, n_val=100, grid=(1e-3, 1e-2), eval_every=2, checkpoint_every=2
)
TINY_ARGS = [
    "--outer-steps",
    "6",
    "--hidden",
    "16",
    "--n-train",
    "120",
    "--n-val",
    "100",
    "--grid",
    "1e-3,1e-2",
    "--eval-every",
    "2",
    "--checkpoint-every",
    "2",
]


def test_list_shows_every_recipe_with_one_line():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == len(RECIPES)
    assert {line.split()[0] for line in lines} == set(RECIPES)


def test_run_help_shows_every_config_field():
    result = CliRunner().invoke(main, ["run", "weight-decay", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in weight_decay.Config.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in result.output
    assert "--resume" in result.output and "--out" in result.output


def test_run_writes_the_run_folder(tmp_path):
    out = tmp_path / "wd"
    result = CliRunner().invoke(
        main, ["run", "weight-decay", *TINY_ARGS, "--out", str(out)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "per-weight decay (IFT)" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["outer_steps"] == 6 and config["grid"] == [1e-3, 1e-2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"no decay", "best global decay", "per-weight decay (IFT)"}
    for m in metrics.values():
        assert {"train_loss", "val_loss", "test_loss", "test_accuracy", "n_hparams", "seconds"} <= set(m)
    assert metrics["per-weight decay (IFT)"]["n_hparams"] == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10
    with (out / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["method"] for r in rows} == set(metrics)
    for png in ("val_loss.png", "decays.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_option_value_is_a_one_line_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["run", "weight-decay", "--outer-steps", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--outer-steps must be >= 1, got 0" in result.output
    result = CliRunner().invoke(main, ["run", "weight-decay", "--grid", "a,b"])
    assert result.exit_code == 2 and "comma-separated list of numbers" in result.output


def test_interrupted_recipe_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = weight_decay.Config(**TINY)
    expected = weight_decay.run(config, tmp_path / "full").metrics

    original, calls = bilevel.Bilevel.outer_step, []

    def crash_after_three(self, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(bilevel.Bilevel, "outer_step", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        weight_decay.run(config, tmp_path / "cut")
    monkeypatch.setattr(bilevel.Bilevel, "outer_step", original)
    result = CliRunner().invoke(main, ["run", "weight-decay", "--resume", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for method, m in expected.items():
        for key in ("train_loss", "val_loss", "test_loss", "test_accuracy"):
            assert resumed[method][key] == m[key], (method, key)


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "nestopt.cli", "list"], capture_output=True, text=True, check=True
    )
    assert "weight-decay" in result.stdout
