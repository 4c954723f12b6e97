"""Score the trainings a `unic-lift-bench` run saved with more decodings, training nothing.

    python benchmarks/rescore_bench.py --bench outputs/curve/demo_10000 \\
        --methods unic-lift-votes-snap unic-lift-votes-snap-mask-merge

A method is scored on every scene of the bench whose runs/ hold a training it shares (same `ns-train` method and
flags: its decoding is all that differs, see ``unic_lift_ns.comparison.variants.training_groups``). The output
(default BENCH/rescored) gets a bench.md and bench.json with the bench's rows and the new ones, which take the
training's time and memory from the bench's row of that training; `benchmarks/budget_curve.py` reads it like any
bench.json. A 10k-step CPU training (about 80 min) is then scored with a new decoding in about 20 s.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import tyro

from unic_lift_ns.comparison.run import evaluate_run
from unic_lift_ns.comparison.table import Row, write_tables
from unic_lift_ns.comparison.variants import VARIANTS, Variant, select_variants, training_groups
from unic_lift_ns.eval.evaluate import EvalResult
from unic_lift_ns.runs import read_run_config
from unic_lift_ns.scripts.bench import scene_name

TIMING = ("train_seconds", "train_cpu_seconds", "peak_memory", "peak_memory_kind")
"""The fields a new row takes from the bench's row of its training."""


def saved_training(bench: Path, data: Dict[str, Any], scene: Tuple[int, str], variant: Variant
                   ) -> Optional[Tuple[Path, Dict[str, Any]]]:  # fmt: skip
    """config.yml of the bench's saved training of ``scene`` (objects, noise) that ``variant`` shares, and a bench
    row scored on it; None if there is none."""
    known = {v.name: v for v in VARIANTS}
    for row in data["rows"]:
        own = known.get(row.get("variant") or "")
        if (row["objects"], row["noise"]) != scene or own is None or len(training_groups([own, variant])) != 1:
            continue
        config = bench / "runs" / scene_name(*scene) / own.method / own.name / "config.yml"  # the run is named
        if config.is_file():  # after the first variant of its group
            return config, row
    return None


def rescored_row(scene: Tuple[int, str], config: Path, row: Dict[str, Any], variant: Variant) -> Row:
    """``variant``'s row on ``scene``, scored on the saved training ``config`` of the bench's ``row``."""
    (scores,), _ = evaluate_run(config, read_run_config(config).data, [variant.decoding], None)
    return Row(scene[0], variant.label, variant.name, scores.result, noise=scene[1],
               label_seconds=scores.label_seconds, **{k: row[k] for k in TIMING})  # fmt: skip


def main(bench: Path, methods: Tuple[str, ...], output_dir: Optional[Path] = None) -> None:
    """Score the bench's saved trainings with ``methods``' decodings; write the bench's rows and theirs. Every
    method needs a saved training it shares, checked before any is scored."""
    data = json.loads((bench / "bench.json").read_text())
    output_dir = output_dir or bench / "rescored"
    if output_dir.resolve() == bench.resolve():
        raise ValueError(f"--output-dir {output_dir}: the bench's own folder; choose another")
    scenes = list(dict.fromkeys((row["objects"], row["noise"]) for row in data["rows"]))
    work = []
    for variant in select_variants(methods):
        found = [(scene, saved_training(bench, data, scene, variant)) for scene in scenes]
        found = [(scene, *training) for scene, training in found if training is not None]
        if not found:
            raise ValueError(f"--methods {variant.name}: no saved training in {bench / 'runs'} that it shares")
        work += [(variant, *training) for training in found]
    rows = [Row(**{**r, "result": None if r["result"] is None else EvalResult(**r["result"])}) for r in data["rows"]]
    rows += [rescored_row(scene, config, row, variant) for variant, scene, config, row in work]
    meta = {k: v for k, v in data.items() if k not in ("columns", "rows", "notes")}
    meta["rescored"] = datetime.datetime.now().isoformat(timespec="seconds")
    header = f"{bench / 'bench.md'} with decodings scored again on its saved trainings ({', '.join(methods)})."
    write_tables(output_dir, rows, meta, header, data.get("notes", []))
    print(f"Saved {output_dir / 'bench.md'} and {output_dir / 'bench.json'}")


if __name__ == "__main__":
    try:
        tyro.cli(main)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"rescore_bench: {err}")
