"""End to end on CPU with the real CLIs: `ns-train unic-lift` on a tiny generated scene, then
`unic-lift-eval --load-config` (its entry point, in-process). The loss must go down and PQ^scene must beat the
untracked 2D segmenter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_scene, train_cpu

STEPS = 300
FAST_SCHEDULE = [
    "--pipeline.model.resolution-schedule", "50",
    "--pipeline.model.warmup-length", "50",
    "--pipeline.model.stop-split-at", "150",
    "--pipeline.model.neighbour-loss-start", "150",
    "--pipeline.model.sh-degree-interval", "100",
    "--optimizers.embeddings.optimizer.lr", "0.02",
    "--optimizers.triplet-projection.optimizer.lr", "0.001",
]  # fmt: skip


def _scalars(run_dir: Path, tag: str) -> np.ndarray:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return np.array([e.value for e in events.Scalars(tag)])


@pytest.mark.slow
def test_ns_train_unic_lift_cpu_end_to_end(unic_lift_eval, tmp_path):
    scene = make_scene(tmp_path / "scene", num_objects=6, num_views=24, resolution=64, num_points=3000)
    run_dir = train_cpu("unic-lift", scene, tmp_path / "outputs", STEPS, "--logging.steps-per-log", "10",
                        *FAST_SCHEDULE)
    assert list((run_dir / "nerfstudio_models").glob("*.ckpt"))

    total = _scalars(run_dir, "Train Loss")
    cluster = _scalars(run_dir, "Train Loss Dict/cluster_loss")
    assert len(total) >= 20 and len(cluster) >= 20
    assert total[-5:].mean() < 0.7 * total[:5].mean(), total
    assert cluster[-5:].mean() < cluster[:5].mean() - 0.01, cluster

    out = tmp_path / "eval.json"
    proc, _ = unic_lift_eval("--load-config", run_dir / "config.yml", "--output-json", out, "--save-labels",
                             tmp_path / "labels", "--instance-decoding", "rendered-embedding",
                             "gaussian-votes")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    paper = results[f"unic-lift (step {STEPS - 1}), rendered-embedding"]
    votes = results[f"unic-lift (step {STEPS - 1}), gaussian-votes"]
    untracked = results["2D segmenter (untracked)"]
    assert paper["psnr"] > 15.0 and votes["psnr"] == paper["psnr"]
    assert paper["pq_scene"] > untracked["pq_scene"] + 0.05, results
    assert votes["pq_scene"] > untracked["pq_scene"], results
    for decoding in ("rendered-embedding", "gaussian-votes"):
        assert len(list((tmp_path / "labels" / decoding / "instances").glob("*.png"))) == 3
