"""Train one variant with the real `ns-train` (a timed subprocess) and evaluate the run it writes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

import numpy as np
import torch
from torch import Tensor

from unic_lift_ns.comparison.budgets import Budget
from unic_lift_ns.comparison.variants import Variant
from unic_lift_ns.clustering import assign_nearest, centroids_or_mean, fit_centroids
from unic_lift_ns.eval.evaluate import EvalResult, score_rendered
from unic_lift_ns.eval.rendered_views import RenderedViews, render_eval_views
from unic_lift_ns.models.backbone import SegmentationSplatModel
from unic_lift_ns.runs import load_run

NEVER = "1000000000"
"""A step interval that never comes: no periodic eval or checkpoint during timed training."""

T = TypeVar("T")


class RunFailed(RuntimeError):
    """Training or evaluating a variant failed; the message names its log file."""


@dataclass(frozen=True)
class TrainingRecord:
    """A finished training run."""

    config: Path
    """Its config.yml."""
    seconds: float
    """Wall-clock time of the `ns-train` process."""
    cpu_seconds: float
    """CPU time of the `ns-train` process (user + system, all threads)."""
    peak_memory: int
    """Peak memory in bytes: CUDA max allocated on GPU, else the peak RSS of the training process."""
    peak_memory_kind: str
    """'cuda_max_allocated' or 'max_rss'."""


@dataclass(frozen=True)
class Scores:
    """Scores and label-assignment timing of one way of labelling a run's rendered embedding maps."""

    result: EvalResult
    """PQ^scene, SQ, RQ, mIoU, PSNR and instance counts on the eval views."""
    label_seconds: float
    """Time to turn every eval view's rendered embedding map into labels (clustering fit excluded)."""
    clustering_seconds: Optional[float]
    """Time to fit the clusters, for methods that decode by clustering; None otherwise."""


def train_command(variant: Variant, budget: Budget, steps: int, scene: Path, runs_dir: Path, experiment: str,
                  device: str, usage_file: Path, extra: Optional[Mapping[str, str]] = None) -> list[str]:  # fmt: skip
    """The `ns-train` command line of ``variant`` (run through :mod:`unic_lift_ns.comparison.ns_train`); ``extra``
    flags go over the budget's, the variant's over both."""
    flags = {**budget.train_flags(variant.method, steps), **(extra or {}), **variant.flags}
    return [
        sys.executable, "-m", "unic_lift_ns.comparison.ns_train", str(usage_file), variant.method,
        "--data", str(scene.resolve()), "--output-dir", str(runs_dir.resolve()), "--experiment-name", experiment,
        "--timestamp", variant.name, "--machine.device-type", device, "--max-num-iterations", str(steps),
        "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True", "--steps-per-eval-image", NEVER,
        "--steps-per-eval-all-images", NEVER, "--steps-per-save", NEVER,
        *(item for flag_value in flags.items() for item in flag_value),
    ]  # fmt: skip


def train_variant(variant: Variant, budget: Budget, steps: int, scene: Path, runs_dir: Path, experiment: str,
                  device: str, extra: Optional[Mapping[str, str]] = None) -> TrainingRecord:  # fmt: skip
    """Train ``variant`` on ``scene`` (``extra`` flags as in :func:`train_command`); output and log under
    ``runs_dir/experiment``. A previous run is replaced."""
    run_dir = runs_dir / experiment / variant.method / variant.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = runs_dir / experiment / f"{variant.name}.log"
    usage_file = runs_dir / experiment / f"{variant.name}.usage.json"
    usage_file.unlink(missing_ok=True)
    cmd = train_command(variant, budget, steps, scene, runs_dir, experiment, device, usage_file, extra)
    with log.open("w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        start = time.perf_counter()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
    if code != 0 or not (run_dir / "config.yml").is_file():
        raise RunFailed(f"ns-train {variant.method} ({variant.name}) failed with exit code {code}; see {log}")
    usage = json.loads(usage_file.read_text())
    cuda = usage["cuda_max_allocated"]
    kind = "cuda_max_allocated" if cuda is not None else "max_rss"
    peak = cuda if cuda is not None else usage["max_rss"]
    return TrainingRecord(run_dir / "config.yml", seconds, usage["cpu_seconds"], peak, kind)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``fn()`` and its wall-clock seconds, synchronising CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return value, time.perf_counter() - start


def timed_decoding(decode: Callable[[Tensor], Tensor], maps: list[Tensor]) -> tuple[list[Tensor], float]:
    """Labels of every map and the seconds it took, after one untimed warm-up call (first-call overheads such as
    kernel selection and allocation are no part of label assignment)."""
    decode(maps[0])
    return timed(lambda: [decode(m) for m in maps], maps[0].device)


@torch.no_grad()
def decode_with_clustering(views: RenderedViews, samples: int, min_cluster_size: int, seed: int = 0
                           ) -> tuple[list[Tensor], float, float]:  # fmt: skip
    """HDBSCAN on ``samples`` random pixels of sigmoid(embedding), then nearest centroid for every pixel.

    Returns (labels per view, fit seconds, assignment seconds); the fit includes the sigmoid and sampling. When
    HDBSCAN finds no cluster, every pixel gets one label (as the clustering baselines do).
    """
    device = views.embeddings[0].device
    generator = torch.Generator().manual_seed(seed)

    def fit() -> Tensor:
        pixels = torch.cat([torch.sigmoid(e).reshape(-1, e.shape[-1]) for e in views.embeddings])
        pick = torch.randperm(pixels.shape[0], generator=generator)[:samples].to(device)
        centroids = fit_centroids(pixels[pick], min_cluster_size)
        return centroids_or_mean(centroids, pixels)

    centroids, fit_seconds = timed(fit, device)
    labels, assign_seconds = timed_decoding(lambda e: assign_nearest(torch.sigmoid(e), centroids), views.embeddings)
    return labels, fit_seconds, assign_seconds


def evaluate_logged(config: Path, scene: Path, decodings: list[Mapping[str, Any]],
                    clustering: Optional[tuple[int, int]], log: Path) -> tuple[list[Scores], Optional[Scores]]:  # fmt: skip
    """:func:`evaluate_run`; any error is written with its traceback to ``log`` and raised as a RunFailed."""
    try:
        return evaluate_run(config, scene, decodings, clustering)
    except Exception as err:  # noqa: BLE001 - one method's failure must not stop the benchmark
        log.write_text(traceback.format_exc())
        raise RunFailed(f"evaluating {config} failed ({type(err).__name__}: {err}); see {log}") from err


def each_decoding(model: SegmentationSplatModel, decodings: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Set each of ``decodings`` (model config fields over the run's own, see :attr:`Variant.decoding`) on the
    trained ``model`` in turn, and yield it while it is set."""
    own_settings = {name: getattr(model.config, name) for decoding in decodings for name in decoding}
    for decoding in decodings:
        model.set_decoding(**{**own_settings, **decoding})
        yield decoding


def evaluate_run(config: Path, scene: Path, decodings: list[Mapping[str, Any]], clustering: Optional[tuple[int, int]]
                 ) -> tuple[list[Scores], Optional[Scores]]:  # fmt: skip
    """Load a trained run once and, for each of ``decodings`` (model config fields over the run's own, see
    :attr:`Variant.decoding`), render its eval views and score the model's labels; the label-assignment time is
    the model's ``decode_instances`` on the rendered embedding maps (for clustering methods: after the fit).

    With ``clustering`` = (samples, min cluster size), the embedding maps (the same for every decoding) are also
    labelled by HDBSCAN + nearest centroid and scored (second value), so both label assignments are timed on
    identical inputs.
    """
    pipeline = load_run(config, test_mode="test").pipeline
    model = pipeline.model
    scores = []
    for _ in each_decoding(model, decodings):
        views = render_eval_views(pipeline, keep_embeddings=True)
        _, seconds = timed_decoding(lambda e: model.decode_instances({"embedding": e}), views.embeddings)
        scores.append(Scores(score_rendered(views, scene), seconds, getattr(model, "clustering_seconds", None)))
    clustered = None
    if clustering is not None:
        labels, fit_seconds, assign_seconds = decode_with_clustering(views, *clustering)
        relabelled = dataclasses.replace(views, instances=[lab.cpu().numpy().astype(np.int64) for lab in labels])
        clustered = Scores(score_rendered(relabelled, scene), assign_seconds, fit_seconds)
    return scores, clustered
