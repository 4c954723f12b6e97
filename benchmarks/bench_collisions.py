"""Code collisions of one trained run, before and after the collision split (--pipeline.model.split-collisions),
with 'gaussian-votes' decoding under the run's vote gate, on its eval views:

    python benchmarks/bench_collisions.py --load-config outputs/demo/unic-lift-cpu/RUN/config.yml

Prints one Markdown row per decoding for docs/BENCHMARKS.md: GT objects that share a label (see
:func:`label_sharing`) and their pairs, the code collisions among them (see :func:`collisions`: groups of objects
that no view of the scene, train or eval, shows together; the others are objects training merged), predicted / GT
instances and PQ^scene. The scene must hold ground truth (gt/, as unic-lift-synth writes it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

import numpy as np
import torch
import tyro
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from unic_lift_ns.data.label_maps import resize_label_map
from unic_lift_ns.eval.evaluate import load_label_maps, score_rendered
from unic_lift_ns.eval.rendered_views import dataset_stems, render_eval_views
from unic_lift_ns.runs import load_run


@dataclass
class BenchCollisions:
    """Score a trained unic-lift run's gaussian-votes decoding without and with the collision split."""

    load_config: Path
    """config.yml of the run."""

    def main(self) -> None:
        run = load_run(self.load_config)
        model, datamanager = run.model, run.pipeline.datamanager
        scene = Path(datamanager.dataparser.config.data)
        eval_stems = dataset_stems(datamanager.eval_dataset)
        all_stems = sorted(set(eval_stems) | set(dataset_stems(datamanager.train_dataset)))
        gt_eval = load_label_maps(scene / "gt" / "instances", eval_stems)
        together = seen_together(load_label_maps(scene / "gt" / "instances", all_stems))
        model.set_decoding(instance_decoding="gaussian-votes")
        cfg = model.config
        print(f"| {run.name} on {scene}, votes gate {cfg.vote_gate} {cfg.vote_confidence} | GT objects sharing a "
              "label (pairs) | collisions | #pred/#GT | PQ^scene |\n|---|---|---|---|---|")  # fmt: skip
        for split in (False, True):
            model.set_decoding(split_collisions=split)
            name = "votes"
            if split:
                start = time.perf_counter()
                report = model.decoding.collision_split(model)[1]
                name = (f"votes + collision split ({cfg.collision_radius} x median spacing = {report.radius:.4f}, "
                        f"min {cfg.collision_min_gaussians} Gaussians: {report.labels_split} labels split, "
                        f"{report.new_labels} new, {time.perf_counter() - start:.1f} s)")  # fmt: skip
            views = render_eval_views(run.pipeline, progress=False)
            result = score_rendered(views, scene)
            groups = label_sharing(views.instances, gt_eval)
            pairs = sum(len(group) * (len(group) - 1) // 2 for group in groups)
            print(f"| {name} | {sum(map(len, groups))} ({pairs}) | {collisions(groups, together)} "
                  f"| {result.num_pred_instances}/{result.num_gt_instances} | {100 * result.pq_scene:.1f} |",
                  flush=True)  # fmt: skip


def label_sharing(pred_instances: Sequence[np.ndarray], gt_instances: Sequence[np.ndarray]) -> List[List[int]]:
    """The groups (two or more) of GT objects that share a predicted label, each sorted by ID.

    A GT object (ID > 0) gets its majority label: the predicted label of most of its pixels over all views (label
    maps at another size are resized, nearest). Objects share a label when their majority labels are equal and not
    0 (with 'gaussian-votes', the pixels no Gaussian votes for).
    """
    votes: Dict[Tuple[int, int], int] = {}
    for pred, gt in zip(pred_instances, gt_instances):
        pred = resize_label_map(torch.from_numpy(np.asarray(pred, dtype=np.int64)), *gt.shape).numpy()
        pairs, counts = np.unique(np.stack([gt.ravel(), pred.ravel()]), axis=1, return_counts=True)
        for (obj, label), n in zip(pairs.T.tolist(), counts.tolist()):
            votes[obj, label] = votes.get((obj, label), 0) + n
    majority: Dict[int, Tuple[int, int]] = {}
    for (obj, label), n in votes.items():
        if obj > 0 and n > majority.get(obj, (0, -1))[1]:
            majority[obj] = (label, n)
    by_label: Dict[int, List[int]] = {}
    for obj, (label, _) in sorted(majority.items()):
        if label != 0:
            by_label.setdefault(label, []).append(obj)
    return [objects for objects in by_label.values() if len(objects) > 1]


def seen_together(gt_instances: Sequence[np.ndarray]) -> Set[Tuple[int, int]]:
    """The (smaller, larger) ID pairs of GT objects that some view shows together (a pixel of each)."""
    together: Set[Tuple[int, int]] = set()
    for gt in gt_instances:
        together.update(combinations(sorted(set(np.unique(gt).tolist()) - {0}), 2))
    return together


def collisions(groups: Sequence[Sequence[int]], together: Set[Tuple[int, int]]) -> int:
    """Code collisions in label-sharing ``groups``: per group, its parts that no chain of objects seen together
    joins, minus one (the new codes a perfect collision split would give; the rest are objects training merged)."""
    total = 0
    for group in groups:
        edges = [(i, j) for (i, a), (j, b) in combinations(enumerate(group), 2) if (a, b) in together]
        rows, cols = zip(*edges) if edges else ((), ())
        graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(group), len(group)))
        total += connected_components(graph, directed=False)[0] - 1
    return total


if __name__ == "__main__":
    tyro.cli(BenchCollisions).main()
