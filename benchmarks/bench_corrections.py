"""Corrections of one trained run (issue #30): how long a merge, split or delete takes to show in a viewer frame, and
what merging the two labels of an over-segmented object does to PQ^scene:

    python benchmarks/bench_corrections.py --load-config outputs/demo/unic-lift-cpu/RUN/config.yml

Latency: the server's work from the button to the new frame, i.e. replaying the corrections on the Gaussians'
labels, the instance list, and one viewer-sized render with the corrected labels (median of --repetitions).
Over-segmentation: on the eval views, the GT object whose pixels two predicted labels share most evenly (each
holding at least 25% of them); the second label is merged into the first, as the viewer's Merge does, and the run
is scored again. Nothing is written into the run directory.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import tyro

from unic_lift_ns.corrections import Correction, Corrections
from unic_lift_ns.eval.evaluate import at_gt_size, load_scene_gt, score_rendered
from unic_lift_ns.eval.rendered_views import dataset_stems, render_eval_views
from unic_lift_ns.runs import load_run
from unic_lift_ns.viewer import instance_summaries


@dataclass
class BenchCorrections:
    """Time corrections on a trained unic-lift run and score a merge of an over-segmented object."""

    load_config: Path
    """config.yml of the run (a unic-lift run; its own corrections file is not read)."""
    decoding: str = "gaussian-votes"
    """Instance decoding to correct (pixels read the Gaussians' corrected labels)."""
    frame_height: int = 512
    """Height of the viewer frame rendered after each correction."""
    repetitions: int = 5
    """Timed repetitions per correction (median reported)."""

    def main(self) -> None:
        run = load_run(self.load_config, corrections=False)
        model = run.model
        model.set_decoding(instance_decoding=self.decoding)
        camera = run.pipeline.datamanager.train_dataset.cameras[0:1].to(model.device)
        camera.rescale_output_resolution(self.frame_height / int(camera.height))
        labels = model.gaussian_labels()
        background = (0, 2**model.config.embedding_dim)  # gaussian-votes' non-voters, nearest-code's no-code
        objects = [s.label for s in instance_summaries(labels, model.means.detach()) if s.label not in background]
        largest, second = objects[:2]
        print(f"| {run.name}, {self.decoding}, {model.num_points} Gaussians, frame {int(camera.width)}x"
              f"{int(camera.height)} | replay (ms) | instance list (ms) | frame (ms) | total (ms) |\n|---|---|---|---|---|")  # fmt: skip
        base = Corrections()
        frames = [_timed(lambda: model.get_outputs_for_camera(camera)) for _ in range(self.repetitions)]
        print(f"| none (the same frame without corrections) | - | - | {1000 * statistics.median(frames):.0f} | - |")
        for name, correction in [(f"merge {second} into {largest}", Correction("merge", second, into=largest)),
                                 (f"split {largest}", Correction("split", largest)),
                                 (f"delete {second}", Correction("delete", second))]:  # fmt: skip
            times = [self.time_correction(model, camera, base.then(correction)) for _ in range(self.repetitions)]
            medians = [1000 * statistics.median(t[i] for t in times) for i in range(3)]
            print(f"| {name} | " + " | ".join(f"{m:.0f}" for m in medians) + f" | {sum(medians):.0f} |")
        model.set_corrections(base)
        self.merge_over_segmented(run, base)

    @staticmethod
    @torch.no_grad()
    def time_correction(model, camera, corrections: Corrections) -> Tuple[float, float, float]:
        """Seconds to replay ``corrections``, to list the instances and to render one frame with them."""
        model.set_corrections(corrections)
        model._gaussian_caches.pop("corrected_labels", None)  # time the replay, not the cache
        replay = _timed(model.gaussian_labels)
        listing = _timed(lambda: instance_summaries(model.gaussian_labels(), model.means.detach()))
        frame = _timed(lambda: model.get_outputs_for_camera(camera)["instance_label"])
        return replay, listing, frame

    def merge_over_segmented(self, run, base: Corrections) -> None:
        """Score the run, merge the two labels of its most evenly over-segmented GT object, score again."""
        scene = Path(run.pipeline.datamanager.dataparser.config.data)
        gt = load_scene_gt(scene, eval_stems=dataset_stems(run.pipeline.datamanager.eval_dataset))
        before = render_eval_views(run.pipeline, progress=False)
        pair = over_segmented_pair(at_gt_size(before, gt)[0], gt.instances)
        if pair is None:
            print("\nNo GT object is shared by two predicted labels (each >= 25% of its pixels): nothing to merge.")
            return
        obj, keep, merged = pair
        result = score_rendered(before, gt)
        run.model.set_corrections(base.then(Correction("merge", merged, into=keep)))
        corrected = score_rendered(render_eval_views(run.pipeline, progress=False), gt)
        print(f"\nGT object {obj} is labels {keep} and {merged}; merging {merged} into {keep}: PQ^scene "
              f"{100 * result.pq_scene:.1f} -> {100 * corrected.pq_scene:.1f}, #pred/#GT {result.num_pred_instances}/"
              f"{result.num_gt_instances} -> {corrected.num_pred_instances}/{corrected.num_gt_instances}")  # fmt: skip


def over_segmented_pair(preds, gts) -> Optional[Tuple[int, int, int]]:
    """(GT object, its larger predicted label, its smaller one) for the object whose pixels over all views two
    predicted labels share most evenly, each holding at least 25% of them; None if no object is split so."""
    pred, gt = np.concatenate([p.ravel() for p in preds]), np.concatenate([g.ravel() for g in gts])
    best, best_share = None, 0.25
    for obj in np.unique(gt[gt > 0]):
        labels, counts = np.unique(pred[gt == obj], return_counts=True)
        if len(labels) < 2:
            continue
        order = np.argsort(-counts)
        share = counts[order[1]] / counts.sum()
        if share >= best_share:
            best, best_share = (int(obj), int(labels[order[0]]), int(labels[order[1]])), share
    return best


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


if __name__ == "__main__":
    tyro.cli(BenchCorrections).main()
