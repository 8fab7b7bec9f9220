"""Collect ``benchmarks/results/*.json`` into one Markdown report, ``benchmarks/results/summary.md``:
one table per benchmark (library x method x metric) and every target with its measured value.
Benchmarks that have not been run are listed as missing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR


def ms(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{1e3 * s['median']:.2f} [{1e3 * s['min']:.2f}, {1e3 * s['max']:.2f}]"


def ratio(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def num(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]


def machine_line(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    start, other = m.get("loadavg_at_start"), m.get("other_processes_cores")
    line = f"_torch {m.get('torch')}, {m.get('torch_threads')} threads, {m.get('cpu')}"
    line += f"; 1-min load {start[0]:.2f} at start" if start else ""
    line += f"; other processes used {other:.2f} cores on average during the run" if other is not None else ""
    return line + "._"


def targets_rows(name: str, result: dict[str, Any]) -> list[list[str]]:
    return [
        [name, t["target"], num(t.get("value"), ".4g"), t["bound"], "PASS" if t["pass"] else "**FAIL**"]
        for t in result.get("targets", [])
    ]


def exactness(result: dict[str, Any]) -> list[str]:
    lines = [
        "## 1. Exactness: ridge regression, 50 log-L2 hyperparameters, float64",
        "",
        machine_line(result),
        "",
        f"Error of each hypergradient to the closed form; K Hessian-vector products (or SGD steps); "
        f"contraction rho = {result['rho']:.3f}, so Neumann and unrolled errors fall like rho^K. "
        f"Time: one call, median [min, max].",
        "",
    ]
    rows = []
    for r in result["rows"]:
        note = r.get("error") or ""
        if r.get("weights_moved", 0) > 1e-8:
            note += f"inner weights left moved by {r['weights_moved']:.2g}"
        rows.append(
            [
                r["library"],
                r["method"],
                num(r["steps"], "d"),
                num(r.get("cosine"), ".6f"),
                num(r.get("relative_error"), ".2e"),
                ms(r.get("seconds")),
                note,
            ]
        )
    return lines + table(["library", "method", "K", "cosine", "relative error", "ms", "note"], rows)


def peers(result: dict[str, Any]) -> list[str]:
    lines = [
        "## 2. Cost: per-weight decay, MLP 40-300-300-10 on MNIST-1D (105k hyperparameters)",
        "",
        machine_line(result),
        "",
        f"One outer step = 5 SGD steps + hypergradient (10 products) + Adam step; the unit is a plain "
        f"PyTorch train step measured in the same interleaved repeats ({ms(result['unit'])} ms). "
        f"Cosines are of the first hypergradient (same start, same batches): with the plain-PyTorch "
        f"reference of the same method in the library's own convention, and with nestopt's same method. "
        f"Memory: peak RSS above setup, MiB; 'first call' includes compilation, 'steady' is later steps.",
        "",
    ]
    rows = []
    for name, r in result["summary"].items():
        mem = r.get("memory", {})
        extra = ""
        if "cosine_vs_cg_with_betty_direction_update" in r:
            extra = (
                f"; cos {r['cosine_vs_cg_with_betty_direction_update']:.6f} with CG using the old residual"
            )
        rows.append(
            [
                name,
                ms(r.get("seconds")),
                ratio(r.get("ratio")),
                num(r.get("cosine_vs_reference"), ".6f"),
                num(r.get("cosine_vs_nestopt"), ".6f"),
                num(mem.get("peak_above_setup_mib"), ".1f"),
                num(mem.get("steady_peak_above_mib"), ".1f"),
                (r.get("error") or r.get("note", "")) + extra,
            ]
        )
    header = [
        "library/method",
        "ms",
        "x train step",
        "cos vs ref",
        "cos vs nestopt",
        "first call MiB",
        "steady MiB",
    ]
    lines += table([*header, "note"], rows)
    wide = {name: r["memory_wide"] for name, r in result["summary"].items() if "memory_wide" in r}
    if wide:
        lines += [
            "",
            f"Memory again on the same MLP with hidden width {result.get('memory_width')} (1.05M weights "
            f"and decays; at 105k a vector is 0.4 MB and the peaks above sit within ~1.5 MiB of allocator "
            f"noise), peak RSS above setup, MiB, one fresh process per row:",
            "",
        ]
        rows = [
            [
                name,
                num(m.get("peak_above_setup_mib"), ".1f"),
                num(m.get("steady_peak_above_mib"), ".1f"),
                m.get("error", ""),
            ]
            for name, m in wide.items()
        ]
        lines += table(["library/method", "first call MiB", "steady MiB", "note"], rows)
    return lines


def scaling(result: dict[str, Any]) -> list[str]:
    s = result["slopes"]
    lines = [
        "## 3. Scaling (nestopt): one hypergradient, neumann(10), per-weight decay on MLPs 40-h-h-10",
        "",
        machine_line(result),
        "",
        f"Log-log slopes: time vs hyperparameters {num(s['time_vs_hyperparameters'], '.2f')} over all "
        f"sizes, {num(s['time_vs_hyperparameters_from_1e5'], '.2f')} from 1e5; memory "
        f"{num(s['memory_vs_hyperparameters'], '.2f')} over all sizes, "
        f"{num(s['memory_vs_hyperparameters_from_1e5'], '.2f')} from 1e5. "
        f"Plots: `scaling_hparams.png`, `scaling_steps.png`.",
        "",
    ]
    rows = [
        [
            str(r["width"]),
            f"{r['hyperparameters']:,}",
            ms(r["seconds"]),
            f"{r['ratio_to_train_step']:.1f}",
            num(r["memory"].get("peak_above_setup_mib"), ".1f"),
        ]
        for r in result["sizes"]
    ]
    lines += table(["h", "hyperparameters", "ms", "x train step", "peak MiB"], rows)
    size = result["steps"][0]["hyperparameters"] if result["steps"] else 0
    lines += [
        "",
        f"Solver steps at {size:,} hyperparameters (CG: damping 5, tol 0: stops only at a zero residual):",
        "",
    ]
    rows = [
        [
            r["solver"],
            str(r["steps"]),
            str(r.get("solver_iterations", "-")),
            ms(r["seconds"]),
            f"{r['ratio_to_train_step']:.1f}",
            num(r["memory"].get("peak_above_setup_mib"), ".1f"),
        ]
        for r in result["steps"]
    ]
    return lines + table(["solver", "steps", "iterations run", "ms", "x train step", "peak MiB"], rows)


def distill(result: dict[str, Any]) -> list[str]:
    p = result["problem"]
    lines = [
        f"## 4. Dataset distillation: {p['images']} distilled {p['side']}x{p['side']} images "
        f"({p['hyperparameters']:,} hyperparameters), convnet with {p['weights']:,} weights",
        "",
        machine_line(result),
        "",
        f"Unit: one plain train step on the 100 images, {ms(result['unit'])} ms.",
        "",
    ]
    rows = [
        [
            name,
            ms(r["seconds"]),
            f"{r['ratio_to_train_step']:.1f}",
            num(r["cosine_vs_plain"], ".6f"),
            num(r["memory"].get("peak_above_setup_mib"), ".1f"),
            num(r["memory"].get("steady_peak_above_mib"), ".1f"),
        ]
        for name, r in result["rows"].items()
    ]
    return lines + table(["nestopt", "ms", "x train step", "cos vs plain", "peak MiB", "steady MiB"], rows)


def hypergrad(result: dict[str, Any]) -> list[str]:
    lines = [
        "## nestopt outer-step configurations (benchmarks/hypergrad.py)",
        "",
        machine_line(result),
        "",
    ]
    memory = result.get("memory", {})
    rows = []
    for name, r in result["summary"]["outer_steps"].items():
        mem = memory.get(name, {})
        rows.append(
            [
                name,
                ms(r.get("seconds")),
                ratio(r.get("ratio")),
                num(r.get("cosine_vs_reference"), ".6f"),
                num(mem.get("peak_above_setup_mib"), ".1f"),
                num(mem.get("steady_peak_above_mib"), ".1f"),
            ]
        )
    header = ["configuration", "ms", "x train step", "cos vs ref", "first call MiB", "steady MiB"]
    return lines + table(header, rows)


SECTIONS = {
    "exactness": exactness,
    "peers": peers,
    "scaling": scaling,
    "distill": distill,
    "hypergrad": hypergrad,
}


def build(directory: Path) -> str:
    results = {
        name: json.loads((directory / f"{name}.json").read_text())
        for name in SECTIONS
        if (directory / f"{name}.json").exists()
    }
    lines = ["# nestopt benchmarks", ""]
    versions = next((r["versions"] for r in results.values() if "versions" in r), None)
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items()), ""]
    missing = [name for name in SECTIONS if name not in results]
    if missing:
        lines += [f"Not run: {', '.join(f'benchmarks/{m}.py' for m in missing)}.", ""]
    target_rows = [row for name, r in results.items() for row in targets_rows(name, r)]
    if target_rows:
        lines += ["## Targets", ""]
        lines += table(["benchmark", "target", "value", "bound", "status"], target_rows)
        lines.append("")
    for name, section in SECTIONS.items():
        if name in results:
            lines += [*section(results[name]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the JSON results")
    args = parser.parse_args()
    text = build(args.results)
    path = args.results / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
