"""The benchmark table: one row per (scene, method), written as Markdown (bench.md) and JSON (bench.json)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from unic_lift_ns.eval.evaluate import EvalResult

COLUMNS = (
    "Objects", "Noise", "Method", "PQ^scene", "SQ", "RQ", "PQ^scene, class-agnostic", "mIoU", "PSNR", "Train (s)",
    "Clustering (s)", "Label assign. (s)", "#inst. pred/GT", "Peak mem. (MiB)",
)  # fmt: skip
"""Markdown columns, in order; qualities are in percent."""


@dataclass(frozen=True)
class Row:
    """One method on one scene."""

    objects: int
    """Number of objects of the scene."""
    method: str
    """Row label."""
    variant: Optional[str] = None
    """Benchmark variant name (None for the 2D segmenter baselines)."""
    result: Optional[EvalResult] = None
    """Scores; None when the run failed."""
    train_seconds: Optional[float] = None
    """Wall clock of `ns-train`."""
    train_cpu_seconds: Optional[float] = None
    """CPU time of `ns-train` (JSON only: shows how much a busy machine slowed the wall clock)."""
    clustering_seconds: Optional[float] = None
    """Cluster fitting time, for methods that decode by clustering."""
    label_seconds: Optional[float] = None
    """Label assignment of every eval view's rendered embedding map."""
    peak_memory: Optional[int] = None
    """Peak training memory in bytes."""
    peak_memory_kind: Optional[str] = None
    """'cuda_max_allocated' or 'max_rss'."""
    error: Optional[str] = None
    """Why the row has no scores."""
    noise: str = "realistic"
    """Segmenter-noise preset of the scene."""


def _percent(value: Optional[float]) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _number(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_row(row: Row) -> list[str]:
    """The cells of ``row`` under :data:`COLUMNS`."""
    r = row.result
    if r is None:
        return [str(row.objects), row.noise, row.method, f"failed: {row.error}"] + ["-"] * (len(COLUMNS) - 4)
    mib = None if row.peak_memory is None else row.peak_memory / 2**20
    return [
        str(row.objects), row.noise, row.method, _percent(r.pq_scene), _percent(r.sq_scene), _percent(r.rq_scene),
        _percent(r.pq_scene_agnostic), _percent(r.miou), _number(r.psnr, ".2f"), _number(row.train_seconds, ".1f"),
        _number(row.clustering_seconds, ".2f"), _number(row.label_seconds, ".3g"),
        f"{r.num_pred_instances}/{r.num_gt_instances}", _number(mib, ".0f"),
    ]  # fmt: skip


def markdown(rows: list[Row], header: str, notes: list[str]) -> str:
    """A Markdown document: header line, the table, then notes."""
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(markdown_row(row)) + " |" for row in rows]
    return "\n".join(lines + [""] + notes) + "\n"


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file so a reader never sees half a table."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf8")
    os.replace(tmp, path)


def write_tables(output_dir: Path, rows: list[Row], meta: dict[str, Any], header: str, notes: list[str]) -> None:
    """``bench.md`` and ``bench.json`` (``meta`` plus the rows) in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "bench.md", markdown(rows, header, notes))
    data = {**meta, "columns": list(COLUMNS), "rows": [asdict(row) for row in rows], "notes": notes}
    write_text(output_dir / "bench.json", json.dumps(data, indent=2) + "\n")
