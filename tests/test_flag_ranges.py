"""Every numeric flag of the methods, the datamanager and the trainer has a range, and a value outside it (or NaN)
stops `ns-train` before anything is written, with one line naming the flag."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import List

import pytest

from conftest import ns_train
from unic_lift_ns.method_configs import contrastive_lift_method, gaussian_clustering_method
from unic_lift_ns.errors import InputError
from unic_lift_ns.flag_ranges import Range, check_flag_ranges, numeric_fields, ranges_of
from unic_lift_ns.trainer import EXIT_BAD_INPUT
from unic_lift_ns.method_configs import unic_lift_cpu_method, unic_lift_method

METHODS = {spec.config.method_name: spec.config for spec in
           (unic_lift_method, unic_lift_cpu_method, contrastive_lift_method, gaussian_clustering_method)}  # fmt: skip


def checked_parts(config) -> List[object]:
    return [config, config.pipeline.model, config.pipeline.datamanager]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_numeric_flag_has_a_range_that_its_default_satisfies(method: str) -> None:
    config = METHODS[method]
    for part in checked_parts(config):
        undeclared = [path for path, _ in numeric_fields(part) if path not in ranges_of(part)]
        assert not undeclared, f"{type(part).__name__}: numeric fields without a range: {undeclared}"
        check_flag_ranges(part, "--")  # the defaults are allowed
    assert "camera_optimizer.rot_l2_penalty" in dict(numeric_fields(config.pipeline.model))


def test_range_wording() -> None:
    assert str(Range(0, 0.5, open_high=True)) == "in [0, 0.5)"
    assert str(Range(0, 1, open_low=True)) == "in (0, 1]"
    assert str(Range(1)) == "at least 1"
    assert str(Range(0, open_low=True)) == "greater than 0"
    assert 0.5 not in Range(0, 0.5, open_high=True) and 0 in Range(0, 0.5, open_high=True)


@pytest.mark.parametrize(
    "method, part, name, value, message",
    [
        ("unic-lift", "model", "cluster_loss_weight", -1.0, "--pipeline.model.cluster-loss-weight must be at least 0, got -1.0"),
        ("unic-lift", "model", "neighbour_tau", -1.0, "--pipeline.model.neighbour-tau must be greater than 0, got -1.0"),
        ("unic-lift", "model", "triplet_margin", -1.0, "--pipeline.model.triplet-margin must be at least 0, got -1.0"),
        ("unic-lift", "model", "sh_degree", 9, "--pipeline.model.sh-degree must be in [0, 4], got 9"),
        ("unic-lift", "trainer", "max_num_iterations", -5, "--max-num-iterations must be at least 1, got -5"),
        ("unic-lift", "datamanager", "mask_scale", float("nan"), "--pipeline.datamanager.mask-scale must be a finite"),
        ("unic-lift", "datamanager", "eval_image_indices", (0, -2), "--pipeline.datamanager.eval-image-indices must"),
        ("contrastive-lift", "model", "cluster_min_size", 1, "--pipeline.model.cluster-min-size must be at least 2"),
        ("gaussian-clustering", "model", "min_temperature", 0.0, "--pipeline.model.min-temperature must be greater"),
    ],
)  # fmt: skip
def test_out_of_range_flag_stops_before_config_yml_is_written(
    method: str, part: str, name: str, value: object, message: str, tmp_path: Path, capsys
) -> None:
    config = copy.deepcopy(METHODS[method])
    config.output_dir, config.timestamp = tmp_path / "outputs", "run"
    target = {"trainer": config, "model": config.pipeline.model, "datamanager": config.pipeline.datamanager}[part]
    setattr(target, name, value)
    with pytest.raises(SystemExit) as exit_info:
        config.save_config()
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"ns-train {method}: ")]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "outputs").exists()


def test_model_built_outside_ns_train_checks_its_ranges_too() -> None:
    from conftest import setup_model
    from unic_lift_ns.models.unic_lift import UniCLiftModelConfig

    with pytest.raises(InputError, match=r"--pipeline.model.vote-confidence must be in \[0, 0.5\), got 0.5"):
        setup_model(UniCLiftModelConfig(vote_confidence=0.5))


def test_ns_train_refuses_a_negative_weight_in_one_line_and_writes_nothing(
    tiny_scene: Path, tmp_path: Path, capfd
) -> None:
    args = ["unic-lift", "--data", str(tiny_scene), "--output-dir", str(tmp_path / "outputs"),
            "--machine.device-type", "cpu", "--vis", "tensorboard", "--pipeline.model.neighbour-loss-weight", "-0.1"]
    capfd.readouterr()
    assert ns_train(*args) == EXIT_BAD_INPUT
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert "ns-train unic-lift: --pipeline.model.neighbour-loss-weight must be at least 0, got -0.1" in out
    assert not (tmp_path / "outputs").exists()
