"""Instance decodings of one trained run, side by side on its eval views: the paper's (rendered embedding),
gaussian-votes and nearest-code under every vote gate, and HDBSCAN clustering of the rendered embedding, without
retraining.

    python benchmarks/bench_vote_gates.py --load-config outputs/demo/unic-lift-cpu/RUN/config.yml

Prints one Markdown row per decoding (PQ^scene, SQ, RQ, predicted / GT instances) for docs/BENCHMARKS.md; the scene
must hold ground truth (gt/, as unic-lift-synth writes it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np
import tyro

from unic_lift_ns.comparison.budgets import CPU_CLUSTERING_MIN_SIZE, CPU_CLUSTERING_SAMPLES
from unic_lift_ns.comparison.run import decode_with_clustering
from unic_lift_ns.eval.evaluate import EvalResult, score_rendered
from unic_lift_ns.eval.rendered_views import render_eval_views
from unic_lift_ns.runs import load_run


@dataclass
class BenchVoteGates:
    """Score every decoding of a trained unic-lift run."""

    load_config: Path
    """config.yml of the run."""
    confidences: Tuple[float, ...] = (0.1, 0.2, 0.3)
    """vote_confidence values of the confidence gates."""
    clustering: bool = True
    """Also cluster the rendered embedding (HDBSCAN on 20k pixels, min cluster size 20, then nearest centroid:
    the bench's CPU setting) for the row to beat."""

    def main(self) -> None:
        run = load_run(self.load_config)
        model, scene = run.model, run.pipeline.datamanager.dataparser.config.data
        decodings = [("rendered-embedding", "none", 0.0), ("gaussian-votes", "none", 0.0),
                     ("gaussian-votes", "semantic", 0.0)]  # fmt: skip
        decodings += [(decoding, gate, c) for decoding in ("gaussian-votes", "nearest-code")
                      for gate in ("confidence", "semantic-and-confidence") for c in self.confidences]  # fmt: skip
        print(f"| {run.name} on {scene} | PQ^scene | SQ | RQ | #pred/#GT |\n|---|---|---|---|---|")
        for decoding, gate, confidence in decodings:
            model.set_decoding(instance_decoding=decoding, vote_gate=gate, vote_confidence=confidence)
            result = score_rendered(render_eval_views(run.pipeline, progress=False), scene)
            kind = "votes" if decoding == "gaussian-votes" else decoding
            name = kind if decoding == "rendered-embedding" else f"{kind}, gate {gate}"
            name += f" {confidence}" if confidence else ""
            print_row(name, result)
        if self.clustering:
            model.set_decoding(instance_decoding="rendered-embedding")
            views = render_eval_views(run.pipeline, progress=False, keep_embeddings=True)
            labels, _, _ = decode_with_clustering(views, CPU_CLUSTERING_SAMPLES, CPU_CLUSTERING_MIN_SIZE)
            clustered = dataclasses.replace(views, instances=[label.cpu().numpy().astype(np.int64) for label in labels])
            print_row("rendered embedding, HDBSCAN + nearest centroid", score_rendered(clustered, scene))


def print_row(name: str, result: EvalResult) -> None:
    print(f"| {name} | {100 * result.pq_scene:.1f} | {100 * result.sq_scene:.1f} | {100 * result.rq_scene:.1f} "
          f"| {result.num_pred_instances}/{result.num_gt_instances} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    tyro.cli(BenchVoteGates).main()
