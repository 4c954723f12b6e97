"""Where each ground-truth object of a scene ends up under a trained run's labels, over its eval views.

    python benchmarks/object_fates.py --methods unic-lift-votes unic-lift-nearest-code \\
        --load-config outputs/b39/h50/runs/objects_50_hard/unic-lift/unic-lift-votes/config.yml

Each GT object takes the predicted label that holds most of its pixels over the eval views: a label of its own, one it
shares with other objects (merged neighbours), the semantic background (and whether its instance label alone is a
code: the semantic head, not the codes, lost it), or no label (``unic_lift_ns.eval.object_fates``). PQ^scene counts
every object once, so this says which failure a change has to fix.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Tuple

import tyro

from unic_lift_ns.comparison.run import each_decoding
from unic_lift_ns.comparison.variants import select_variants
from unic_lift_ns.eval.evaluate import at_gt_size, load_scene_gt
from unic_lift_ns.eval.object_fates import object_fates
from unic_lift_ns.eval.rendered_views import render_eval_views
from unic_lift_ns.instance_codes import max_labels
from unic_lift_ns.runs import load_run, read_run_config


def main(load_config: Path, methods: Tuple[str, ...] = ("unic-lift-votes",)) -> None:
    """Print the fates of the GT objects of a run's scene under each of ``methods``' decodings (`unic-lift-bench`
    variants of the run's training), rendering the eval views once per method."""
    variants = select_variants(methods)
    scene = Path(read_run_config(load_config).data)
    pipeline = load_run(load_config, test_mode="test").pipeline
    model = pipeline.model
    gt = None
    for variant, _ in zip(variants, each_decoding(model, [variant.decoding for variant in variants])):
        views = render_eval_views(pipeline)
        gt = gt or load_scene_gt(scene, eval_stems=views.stems)  # the same views under every decoding
        instances, semantics = at_gt_size(views, gt)
        fates = object_fates(instances, semantics, gt.instances, max_labels(model.config.embedding_dim))
        print(f"{variant.name} on {scene}: {fates.line()}")


if __name__ == "__main__":
    try:
        tyro.cli(main)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"object_fates: {err}")
