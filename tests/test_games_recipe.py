"""The bilinear-game recipe and its command, on a tiny configuration."""

import csv
import json

from click.testing import CliRunner

from nestopt.cli import main
from nestopt.recipes import RECIPES, bilinear_game

TINY = dict(dim=2, steps=60, lrs=(0.1, 0.5), grid=6)
TINY_ARGS = ["--dim", "2", "--steps", "60", "--lrs", "0.1,0.5", "--grid", "6"]


def test_recipe_is_registered_with_a_table():
    assert RECIPES["bilinear-game"].module is bilinear_game
    assert [key for _, key, _ in bilinear_game.TABLE] == [
        "lr",
        "beta",
        "predicted_rate",
        "measured_rate",
        "final_distance",
    ]


def test_recipe_writes_metrics_curves_and_plots_with_one_entry_per_optimizer(tmp_path):
    result = bilinear_game.run(bilinear_game.Config(**TINY), tmp_path / "bg")
    metrics = json.loads((tmp_path / "bg" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    games = {m["game"] for m in metrics.values()}
    assert games == {"bilinear", "quadratic γ=0.1"}
    assert len(metrics) == 2 * 11
    for m in metrics.values():
        assert {"predicted_rate", "measured_rate", "final_distance", "lr", "order"} <= set(m)
        assert m["lr"] in TINY["lrs"]
    # simultaneous GDA diverges on the bilinear game at every learning rate; optimistic converges
    assert metrics["bilinear / GDA"]["predicted_rate"] > 1 and metrics["bilinear / GDA"]["measured_rate"] > 1
    assert (
        metrics["bilinear / optimistic"]["final_distance"]
        < metrics["bilinear / optimistic"]["initial_distance"]
    )
    with (tmp_path / "bg" / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["game"], r["method"]) for r in rows} == {(m["game"], m["optimizer"]) for m in metrics.values()}
    for png in ("distance.png", "beta_heatmap.png"):
        assert (tmp_path / "bg" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_prints_the_table_and_gamma_zero_keeps_the_bilinear_game_only(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main, ["run", "bilinear-game", *TINY_ARGS, "--gamma", "0", "--out", str(out)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert (
        "optimistic" in result.output and "predicted" in result.output
    )  # rich wraps long names at 80 columns
    assert {m["game"] for m in json.loads((out / "metrics.json").read_text()).values()} == {"bilinear"}


def test_bad_options_are_one_line_usage_errors(tmp_path):
    for args, message in [
        (["--beta-magnitude", "1.0"], "--beta-magnitude must be in [0, 1), got 1.0"),
        (["--lrs", "0,0.1"], "--lrs must list positive learning rates"),
        (["--steps", "1"], "--steps must be >= 2, got 1"),
    ]:
        result = CliRunner().invoke(main, ["run", "bilinear-game", *args, "--out", str(tmp_path)])
        assert result.exit_code == 2 and message in result.output, result.output
