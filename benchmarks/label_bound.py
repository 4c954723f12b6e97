"""What a perfect labelling of a trained run's Gaussians would score (``unic_lift_ns.eval.label_bound``).

    python benchmarks/label_bound.py \\
        --load-config outputs/b42/h50_base/runs/objects_50_hard/unic-lift/unic-lift-votes/config.yml

Each Gaussian takes the GT object its centre shows in most train views (``gt/instances`` of the scene, seen like the
mask split sees the train masks), and the run decodes like snapped votes with the mask split and merge and its own
rendering: the mask split's labels are replaced by the GT ones. A pixel's class comes either from the run's semantic
head (what every decoding does now) or from its label (an object where the voting Gaussians' label is a code, with
the vote majority on, as without semantic masks). A goal above both figures needs another training; one above the
first only needs a better decoding whose class follows its labels. Reads the scene's GT: a diagnostic, never a
method.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import numpy as np
import tyro

from unic_lift_ns.collisions import median_neighbour_distance
from unic_lift_ns.eval.evaluate import load_label_maps, score_rendered
from unic_lift_ns.eval.label_bound import gt_gaussian_labels
from unic_lift_ns.eval.rendered_views import dataset_stems, render_eval_views
from unic_lift_ns.instance_codes import max_labels
from unic_lift_ns.mask_split import MaskSplitReport
from unic_lift_ns.models import decoding
from unic_lift_ns.models.portable_splatfacto import world_to_camera
from unic_lift_ns.runs import load_run, read_run_config

FROM_LABELS = "the labels (object where a pixel's label is a code), vote majority on"
"""The second pixel-class rule: a decoding whose class follows its labels, not the semantic head."""


def main(load_config: Path) -> None:
    """Print the GT objects that hold a Gaussian, and PQ^scene (SQ, RQ), instances predicted / GT with every
    Gaussian labelled by the GT, once with each pixel's class from the run's semantic head (the run's vote majority
    setting) and once from its label with the vote majority on."""
    scene = Path(read_run_config(load_config).data)
    pipeline = load_run(load_config, test_mode="test").pipeline
    model, cameras = pipeline.model, pipeline.model.train_cameras
    stems = dataset_stems(pipeline.datamanager.train_dataset)
    gt = load_label_maps(scene / "gt" / "instances", stems)
    size = (int(cameras.height[0]), int(cameras.width[0]))
    if any(g.shape != size for g in gt):
        raise ValueError(f"{scene / 'gt' / 'instances'}: maps are not the train views' size {size}")
    no_label = max_labels(model.config.embedding_dim)
    if max(int(g.max()) for g in gt) >= no_label:
        raise ValueError(f"{scene}: more GT objects than the {no_label} codes of d = {model.config.embedding_dim}")
    means = model.means.detach().cpu().numpy()
    labels = gt_gaussian_labels(
        means, world_to_camera(cameras.camera_to_worlds).cpu().numpy(), cameras.get_intrinsics_matrices().numpy(), gt,
        model.config.collision_radius * median_neighbour_distance(means), no_label,
    )  # fmt: skip
    report = MaskSplitReport(views=len(gt), labels_split=0, new_labels=0, unsplit_groups=0)
    objects = len(np.unique(labels[labels != no_label]))
    print(f"GT labels on {scene}: {objects} GT objects hold a Gaussian ({len(means)} Gaussians)")
    with mock.patch.object(decoding, "split_labels_by_masks", lambda *args, **kwargs: (labels, report)):
        for name, majority in (("the run's semantic head", model.config.vote_majority), (FROM_LABELS, "on")):
            model.set_decoding(instance_decoding="gaussian-votes", snap_votes=True, split_by_masks=True,
                               merge_by_masks=True, vote_majority=majority)  # fmt: skip
            views = render_eval_views(pipeline)
            if name == FROM_LABELS:
                views.semantics = [((view > 0) & (view < no_label)).astype(np.int64) for view in views.instances]
            result = score_rendered(views, scene)
            print(f"  class from {name}: PQ^scene {100 * result.pq_scene:.1f} (SQ {100 * result.sq_scene:.1f}, RQ "
                  f"{100 * result.rq_scene:.1f}; class-agnostic {100 * result.pq_scene_agnostic:.1f}), "
                  f"{result.num_pred_instances}/{result.num_gt_instances} instances")  # fmt: skip


if __name__ == "__main__":
    try:
        tyro.cli(main)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"label_bound: {err}")
