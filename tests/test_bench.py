"""`unic-lift-bench`: variants, budgets and scene reuse as units; the real CLI end to end on a tiny scene."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from conftest import make_scene
from unic_lift_ns.comparison.budgets import BUDGETS, CPU_SMALL
from unic_lift_ns.comparison.variants import (
    GAUSSIAN_CLUSTERING_PAPER_LABELS,
    VARIANTS,
    select_variants,
    trains_like_paper,
    training_groups,
)
from unic_lift_ns.comparison.run import train_command
from unic_lift_ns.comparison.scenes import prepare_scene
from unic_lift_ns.comparison.table import COLUMNS
from unic_lift_ns.eval.evaluate import TRACKED, UNTRACKED
from unic_lift_ns.method_configs import unic_lift_cpu_trainer_config
from unic_lift_ns.runs import read_run_config
from unic_lift_ns.scripts.bench import BenchConfig, entrypoint
from unic_lift_ns.synth.generate import SynthConfig

BENCH = str(Path(sys.executable).parent / "unic-lift-bench")
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
TINY = ["--objects", "4", "--steps", "20", "--resolution", "32", "--views", "16", "--points", "500"]


def _flags(cmd: list[str]) -> dict[str, str]:
    """Flag -> value of the `--flag value` pairs after the method name of a train command."""
    args = cmd[cmd.index("unic-lift") + 1 :]
    return dict(zip(args[::2], args[1::2]))


def test_variants_cover_the_ablations_and_baselines():
    names = [v.name for v in VARIANTS]
    assert len(set(names)) == len(names)
    assert {"unic-lift", "unic-lift-votes", "unic-lift-votes-semantic", "unic-lift-no-semantics",
            "unic-lift-votes-no-semantics", "unic-lift-votes-split", "unic-lift-nearest-code",
            "unic-lift-nearest-code-no-semantics", "unic-lift-votes-mask-split", "unic-lift-votes-mask-split-merge",
            "unic-lift-votes-mask-split-no-semantics", "unic-lift-votes-mask-split-merge-no-semantics",
            "unic-lift-votes-mask-recover", "unic-lift-votes-mask-recover-merge",
            "unic-lift-votes-mask-recover-merge-no-semantics", "unic-lift-votes-snap",
            "unic-lift-votes-snap-mask-merge",
            "unic-lift-votes-snap-mask-split-merge", "unic-lift-votes-snap-mask-recover-merge",
            "unic-lift-votes-snap-mask-split-merge-no-semantics",
            "unic-lift-votes-snap-mask-recover-merge-no-semantics", "cluster-sum", "stuff-label-0", "no-triplet",
            "no-linear-layer", "no-3d-loss", "3d-loss-from-start", "random-triplets", "masks-5pct", "masks-10pct",
            "masks-20pct", "masks-0.5x", "masks-0.25x", "contrastive-lift", "gaussian-clustering",
            "gaussian-clustering-paper-labels"} == set(names)  # fmt: skip
    assert [v.name for v in select_variants(("no-triplet", "unic-lift"))] == ["unic-lift", "no-triplet"]
    with pytest.raises(ValueError, match="'nope'"):
        select_variants(("unic-lift", "nope"))


def test_budget_flags_scale_with_steps_and_variant_flags_win():
    flags = CPU_SMALL.train_flags("unic-lift", 400)
    assert flags["--pipeline.model.stop-split-at"] == "200"
    assert flags["--pipeline.model.neighbour-loss-start"] == "200"
    assert CPU_SMALL.train_flags("unic-lift", 40)["--pipeline.model.stop-split-at"] == "20"
    assert "--pipeline.model.neighbour-loss-start" not in CPU_SMALL.train_flags("contrastive-lift", 400)  # no 3D loss
    assert BUDGETS["gpu-paper"].train_flags("unic-lift", 30000)["--pipeline.model.stop-split-at"] == "15000"
    assert set(typing.get_args(typing.get_type_hints(BenchConfig)["budget"])) == set(BUDGETS)

    variant = next(v for v in VARIANTS if v.name == "3d-loss-from-start")
    cmd = train_command(variant, CPU_SMALL, 400, Path("scene"), Path("runs"), "exp", "cpu", Path("usage.json"))
    assert cmd.count("--pipeline.model.neighbour-loss-start") == 1
    flags = _flags(cmd)
    assert flags["--pipeline.model.neighbour-loss-start"] == "0"
    assert flags["--max-num-iterations"] == "400" and flags["--machine.device-type"] == "cpu"


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_variant_command_parses_with_ns_train(budget):
    """Every flag of every variant exists in its method's config (ns-train's own tyro parser, no training)."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    for variant in VARIANTS:
        cmd = train_command(variant, BUDGETS[budget], 1000, Path("s"), Path("r"), "e", "cpu", Path("u.json"))
        config = tyro.cli(AnnotatedBaseConfigUnion, args=cmd[cmd.index(variant.method) :])
        assert config.method_name == variant.method and config.max_num_iterations == 1000
        for flag, value in variant.flags.items():
            *path, name = flag.removeprefix("--").replace("-", "_").split(".")
            target = config
            for part in path:
                target = getattr(target, part)
            actual = getattr(target, name)
            if value == "None":
                assert actual is None, (flag, actual)
            else:
                assert str(actual) == value if isinstance(actual, bool) else actual == type(actual)(value), (flag, actual)
        model_config = type(config.pipeline.model)
        for name, value in variant.decoding.items():  # fields set on the loaded run: they must exist and type-check
            fields = {f.name: f for f in dataclasses.fields(model_config)}
            assert name in fields, (variant.name, name)
            hint = typing.get_type_hints(model_config)[name]
            assert value in typing.get_args(hint) if typing.get_origin(hint) else isinstance(value, hint), (name, value)


def test_variants_that_differ_only_in_decoding_share_a_training():
    variants = select_variants(("unic-lift", "unic-lift-votes", "unic-lift-nearest-code", "no-triplet",
                                "unic-lift-no-semantics", "unic-lift-nearest-code-no-semantics"))  # fmt: skip
    groups = [[v.name for v in group] for group in training_groups(variants)]
    assert groups == [["unic-lift", "unic-lift-votes", "unic-lift-nearest-code"],
                      ["unic-lift-no-semantics", "unic-lift-nearest-code-no-semantics"], ["no-triplet"]]  # fmt: skip
    # so HDBSCAN on the maps of the paper's training is one row, whichever of its decodings a bench runs first
    assert all(trains_like_paper(name) for name in ("unic-lift", "unic-lift-votes", "unic-lift-nearest-code"))
    assert not any(trains_like_paper(name) for name in ("no-triplet", "unic-lift-no-semantics", "contrastive-lift"))


def test_gaussian_clustering_paper_labels_are_its_model_defaults_on_the_budgets_training():
    from unic_lift_ns.baselines.gaussian_clustering import GaussianClusteringModelConfig

    defaults = GaussianClusteringModelConfig()
    paper = GAUSSIAN_CLUSTERING_PAPER_LABELS
    assert {name: getattr(defaults, name) for name in paper} == paper
    flags = CPU_SMALL.train_flags("gaussian-clustering", 300)
    assert flags["--pipeline.model.semantic-guided-clustering"] == "True"  # the budget changes them...
    variants = select_variants(("gaussian-clustering", "gaussian-clustering-paper-labels"))
    assert len(training_groups(variants)) == 1  # ...and the paper's labels are scored on the same training


def test_cpu_small_trains_with_the_unic_lift_cpu_recipe_scaled_to_its_steps():
    """cpu-small's flags, through ns-train's parser, give every method the schedule and densification threshold of
    `unic_lift_cpu_trainer_config(steps)`, and UniC-Lift its learning rates; the flags are those of before
    `unic-lift-cpu` (the 3D-loss start for UniC-Lift only: the baselines have no Eq. 6)."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    assert CPU_SMALL.train_flags("unic-lift", 300) == {
        "--pipeline.model.warmup-length": "30", "--pipeline.model.resolution-schedule": "60",
        "--pipeline.model.stop-split-at": "150", "--pipeline.model.sh-degree-interval": "60",
        "--pipeline.model.neighbour-loss-start": "150", "--pipeline.model.densify-grad-thresh": "0.003",
        "--optimizers.embeddings.optimizer.lr": "0.01", "--optimizers.triplet-projection.optimizer.lr": "0.001",
    }  # fmt: skip
    recipe = unic_lift_cpu_trainer_config(300)
    fields = ("warmup_length", "resolution_schedule", "stop_split_at", "sh_degree_interval", "neighbour_loss_start",
              "densify_grad_thresh")  # fmt: skip
    for method in ("unic-lift", "contrastive-lift", "gaussian-clustering"):
        variant = next(v for v in VARIANTS if v.name == method)
        cmd = train_command(variant, CPU_SMALL, 300, Path("s"), Path("r"), "e", "cpu", Path("u.json"))
        config = tyro.cli(AnnotatedBaseConfigUnion, args=cmd[cmd.index(method) :])
        for name in fields if method == "unic-lift" else fields[:4] + fields[5:]:  # the baselines have no Eq. 6
            assert getattr(config.pipeline.model, name) == getattr(recipe.pipeline.model, name), (method, name)
        if method == "unic-lift":
            for group in ("embeddings", "triplet_projection"):
                assert config.optimizers[group]["optimizer"].lr == recipe.optimizers[group]["optimizer"].lr, group


def test_scenes_are_reused_only_when_their_settings_match(tmp_path):
    cfg = SynthConfig(tmp_path / "objects_3", num_objects=3, num_views=4, resolution=24, num_points=200)
    make_scene(cfg.output, num_objects=3, num_views=4, resolution=24, num_points=200)
    assert prepare_scene(cfg) == (cfg.output, True)
    with pytest.raises(ValueError, match=r"objects_3 was generated with other settings \(num_views: 4 != 6\)"):
        prepare_scene(SynthConfig(cfg.output, num_objects=3, num_views=6, resolution=24, num_points=200))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "unic-lift", "bogus-method"], "unknown method 'bogus-method'"),
        (["--steps", "0"], "--steps must be positive, got 0"),
        (["--max-gaussians", "0"], "--max-gaussians must be positive, got 0"),
        (["--budget", "huge"], "huge"),
    ],
)
def test_bad_arguments_fail_cleanly(tmp_path, monkeypatch, capfd, args, message):
    """The real entry point, in-process (the end-to-end test below runs it as a process)."""
    monkeypatch.setattr(sys, "argv", ["unic-lift-bench", "--output-dir", str(tmp_path / "out"), *args])
    with pytest.raises(SystemExit) as stop:
        entrypoint()
    assert stop.value.code == 2
    output = " ".join("".join(capfd.readouterr()).split())
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bench_tiny_scene_end_to_end(tmp_path, in_process):
    out = tmp_path / "bench"
    methods = ["unic-lift", "unic-lift-nearest-code", "no-triplet"]
    cmd = [BENCH, "--output-dir", str(out), "--methods", *methods, "--noise", "hard", *TINY, "--max-gaussians", "900"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    table = (out / "bench.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| Objects"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(COLUMNS)
    data = json.loads((out / "bench.json").read_text())
    assert data["steps"] == 20 and data["budget"] == "cpu-recipe" and data["resolution"] == 32
    assert data["max_gaussians"] == 900 and "at most 900 Gaussians" in table[0]
    rows = {row["method"]: row for row in data["rows"]}
    no_triplet_hdbscan = "UniC-Lift w/o triplet loss: maps, HDBSCAN + nearest centroid"
    nearest_code = "UniC-Lift, nearest-code decoding (confidence gate)"
    assert list(rows) == [UNTRACKED, TRACKED, "UniC-Lift", nearest_code, "UniC-Lift maps, HDBSCAN + nearest centroid",
                          "UniC-Lift w/o triplet loss", no_triplet_hdbscan]  # fmt: skip
    assert sum(line.startswith("| 4 | hard |") for line in table) == len(rows)
    for name, row in rows.items():
        result = row["result"]
        assert row["objects"] == 4 and row["noise"] == "hard" and row["error"] is None
        for key in ("pq_scene", "sq_scene", "rq_scene", "miou", "pq_scene_agnostic"):
            assert 0.0 <= result[key] <= 1.0, (name, key, result[key])
        assert result["num_gt_instances"] > 0 and result["num_views"] == 2
    for name in ("UniC-Lift", nearest_code, "UniC-Lift maps, HDBSCAN + nearest centroid",
                 "UniC-Lift w/o triplet loss", no_triplet_hdbscan):
        row = rows[name]
        assert row["train_seconds"] > 0 and row["train_cpu_seconds"] > 0 and row["label_seconds"] > 0, row
        assert row["peak_memory"] > 2**20, row
        assert row["peak_memory_kind"] == "max_rss" and row["result"]["psnr"] > 5
    assert rows["UniC-Lift"]["clustering_seconds"] is None
    assert rows["UniC-Lift maps, HDBSCAN + nearest centroid"]["clustering_seconds"] > 0
    assert rows[no_triplet_hdbscan]["clustering_seconds"] > 0
    assert rows[no_triplet_hdbscan]["train_seconds"] == rows["UniC-Lift w/o triplet loss"]["train_seconds"]
    # the nearest-code row scores UniC-Lift's training (one run, no second training of the same flags)
    assert rows[nearest_code]["train_seconds"] == rows["UniC-Lift"]["train_seconds"]
    assert sorted(p.name for p in (out / "runs" / "objects_4_hard" / "unic-lift").iterdir()) == sorted(methods[::2])
    assert sum("bit decoding" in note for note in data["notes"]) == 1
    scene = json.loads((out / "scenes" / "objects_4_hard" / "scene.json").read_text())
    assert scene["config"]["noise"] == "hard" and scene["config"]["num_objects"] == 4
    assert (out / "runs" / "objects_4_hard" / "unic-lift" / "no-triplet" / "config.yml").is_file()
    for name in methods[::2]:  # every training got the ceiling
        config = read_run_config(out / "runs" / "objects_4_hard" / "unic-lift" / name / "config.yml")
        assert config.pipeline.model.max_gaussians == 900

    # benchmarks/rescore_bench.py scores the saved UniC-Lift training again with a new decoding, training nothing
    rescore = [BENCHMARKS / "rescore_bench.py", "--bench", out]
    refused, _ = in_process(*rescore, "--methods", "unic-lift-votes-snap", "contrastive-lift")
    assert refused.returncode != 0 and "--methods contrastive-lift: no saved training" in refused.stderr
    assert not (out / "rescored").exists()
    proc, _ = in_process(*rescore, "--methods", "unic-lift-votes-snap")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rescored = json.loads((out / "rescored" / "bench.json").read_text())["rows"]
    assert [row["method"] for row in rescored[:-1]] == list(rows)
    snap = rescored[-1]
    assert snap["variant"] == "unic-lift-votes-snap" and snap["train_seconds"] == rows["UniC-Lift"]["train_seconds"]
    assert 0.0 <= snap["result"]["pq_scene"] <= 1.0 and snap["result"]["num_views"] == 2

    # benchmarks/object_fates.py tells where each GT object of the scene went under a decoding of the saved training
    run_config = out / "runs" / "objects_4_hard" / "unic-lift" / "unic-lift" / "config.yml"
    proc, _ = in_process(BENCHMARKS / "object_fates.py", "--methods", "unic-lift", "unic-lift-nearest-code",
                         "--load-config", run_config)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    fates_line = (r"(\d+) GT objects: (\d+) own label, (\d+) sharing \d+ labels, (\d+) predicted background "
                  r"\(\d+ of them with a code label without semantics\), (\d+) without a label")
    for method in ("unic-lift", "unic-lift-nearest-code"):
        counts = re.search(f"{method} on .*?: {fates_line}", proc.stdout)
        assert counts is not None, proc.stdout
        total, *fates_counts = map(int, counts.groups())
        assert 1 <= total <= 4 and sum(fates_counts) == total, proc.stdout

    # benchmarks/label_bound.py scores the same training with every Gaussian labelled by the GT object it shows most
    proc, _ = in_process(BENCHMARKS / "label_bound.py", "--load-config", run_config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    holding = re.search(r"GT labels on .*: (\d+) GT objects hold a Gaussian \((\d+) Gaussians\)", proc.stdout)
    assert holding is not None, proc.stdout
    assert 1 <= int(holding[1]) <= 4 and 0 < int(holding[2]) <= 900
    bounds = re.findall(r"class from (the run's semantic head|the labels .*?): PQ\^scene ([\d.]+) \(SQ [\d.]+, RQ "
                        r"[\d.]+; class-agnostic [\d.]+\), (\d+)/(\d+) instances", proc.stdout)  # fmt: skip
    assert [rule.split(" ")[1] for rule, *_ in bounds] == ["run's", "labels"], proc.stdout
    for _, pq, _, num_gt in bounds:
        assert 0.0 <= float(pq) <= 100.0 and int(num_gt) == rows["UniC-Lift"]["result"]["num_gt_instances"]
