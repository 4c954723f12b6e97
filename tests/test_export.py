"""unic-lift-export on a real trained run: per-instance PLYs, the combined PLY, edits, bad input, ns-export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from plyfile import PlyData
from scipy.spatial.transform import Rotation

from conftest import exit_status
from unic_lift_ns.export.instances import export_instance, export_instances, model_splats, move_instance
from unic_lift_ns.export.ply import INSTANCE_PROPERTY, Splats, write_ply
from unic_lift_ns.models.unic_lift import UniCLiftModel
from unic_lift_ns.scripts import cli
from unic_lift_ns.runs import load_run
from unic_lift_ns.scripts.export import NS_EXPORT_MIN_OPACITY, entrypoint, faint_note, staged


def run_cli(monkeypatch, *args) -> int:
    """Run unic-lift-export in-process with ``args``; returns its exit code."""
    monkeypatch.setattr(sys, "argv", ["unic-lift-export", *map(str, args)])
    return exit_status(entrypoint)


def printed(capsys) -> str:
    """What the CLI printed since the last call, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def umask_027():
    """Run the test under umask 027, so that new folders should be 0o750 (and mkdtemp's 0o700 would show)."""
    previous = os.umask(0o027)
    yield 0o750
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_vertices(path: Path) -> np.ndarray:
    return PlyData.read(str(path))["vertex"].data


def positions(vertices: np.ndarray) -> np.ndarray:
    return np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)


@pytest.fixture(scope="module")
def config(trained_run: Path) -> Path:
    return trained_run / "config.yml"


@pytest.fixture(scope="module")
def model(config: Path) -> UniCLiftModel:
    return load_run(config, test_mode="inference").model


@pytest.fixture(scope="module")
def labels(model: UniCLiftModel) -> np.ndarray:
    return model.gaussian_labels().numpy()


def largest_labels(labels: np.ndarray, k: int) -> list:
    values, counts = np.unique(labels, return_counts=True)
    return [int(v) for v in values[np.argsort(-counts, kind="stable")[:k]]]


def assert_matches_checkpoint(vertices: np.ndarray, model: UniCLiftModel, index: np.ndarray) -> None:
    """PLY vertices equal the checkpoint's tensors of the Gaussians ``index``."""
    expected = {
        "means": model.means, "scale": model.scales, "rot": model.quats, "f_dc": model.features_dc,
        "f_rest": model.features_rest.transpose(1, 2).reshape(model.num_points, -1),
    }  # fmt: skip
    columns = {
        "means": positions(vertices),
        **{prefix: np.stack([vertices[f"{prefix}_{i}"] for i in range(expected[prefix].shape[1])], axis=1)
           for prefix in ("scale", "rot", "f_dc", "f_rest")},
    }  # fmt: skip
    for name, tensor in expected.items():
        np.testing.assert_array_equal(columns[name], tensor.detach().numpy()[index], err_msg=name)
    np.testing.assert_array_equal(vertices["opacity"], model.opacities.detach().numpy()[index, 0])


def test_instances_export_round_trips_every_gaussian(monkeypatch, capsys, umask_027, tmp_path, config, model,
                                                     labels) -> None:  # fmt: skip
    out = tmp_path / "new" / "all"
    assert run_cli(monkeypatch, "instances", "--load-config", config, "--output-dir", out, "--min-gaussians", 1) == 0
    faint = int((model.opacities.detach().numpy()[:, 0] < NS_EXPORT_MIN_OPACITY).sum())
    assert (f"({model.num_points} of {model.num_points} Gaussians; ns-export gaussian-splat would also drop the "
            f"{faint} of them with opacity below 1/255)") in printed(capsys)  # fmt: skip
    assert mode(tmp_path / "new") == mode(out) == mode(out / "pointclouds") == umask_027
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["all"]  # no staging folder left behind
    present = np.unique(labels)
    assert sorted(p.name for p in out.glob("instance_*.ply")) == sorted(f"instance_{label}.ply" for label in present)
    counts = {label: read_vertices(out / f"instance_{label}.ply").shape[0] for label in present}
    assert sum(counts.values()) == model.num_points
    biggest = largest_labels(labels, 1)[0]
    assert_matches_checkpoint(read_vertices(out / f"instance_{biggest}.ply"), model, np.flatnonzero(labels == biggest))

    combined = read_vertices(out / "instances.ply")
    assert combined.dtype.names[-1] == INSTANCE_PROPERTY
    np.testing.assert_array_equal(combined[INSTANCE_PROPERTY], labels)
    assert_matches_checkpoint(combined, model, np.arange(model.num_points))

    summary = json.loads((out / "instances.json").read_text())
    assert summary["num_gaussians"] == model.num_points
    record = next(r for r in summary["instances"] if r["label"] == biggest)
    means = model.means.detach().numpy()[labels == biggest]
    assert record["num_gaussians"] == counts[biggest]
    np.testing.assert_allclose(record["centroid"], means.mean(0), atol=1e-6)
    np.testing.assert_allclose([record["bbox_min"], record["bbox_max"]], [means.min(0), means.max(0)])
    cloud = o3d.io.read_point_cloud(str(out / "pointclouds" / f"instance_{biggest}.ply"))
    np.testing.assert_allclose(np.asarray(cloud.points), means, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cloud.colors)[0] * 255, record["colour"], atol=0.5)


def test_overwrite_keeps_foreign_files_and_removes_stale_instances(monkeypatch, capsys, tmp_path, config, model,
                                                                  labels) -> None:  # fmt: skip
    first, second, third = largest_labels(labels, 3)
    threshold = int((labels == second).sum())
    out = tmp_path / "some"
    (out / "pointclouds").mkdir(parents=True)
    foreign = {"notes.txt": b"keep me", "instance_07.ply": b"not a name we write", "pointclouds/notes.txt": b"mine"}
    for name, data in foreign.items():
        (out / name).write_bytes(data)
    earlier = tmp_path / "earlier"  # files of an earlier export, recognised by their content
    export_instances(*model_splats(model, model.gaussian_labels()), [first], earlier, progress=False)
    stale = {"instance_999999.ply": (earlier / f"instance_{first}.ply").read_bytes(),
             "pointclouds/instance_999999.ply": (earlier / "pointclouds" / f"instance_{first}.ply").read_bytes(),
             "instances.json": (earlier / "instances.json").read_bytes()}  # fmt: skip
    shutil.rmtree(earlier)
    for name, data in stale.items():
        (out / name).write_bytes(data)
    args = ["instances", "--load-config", config, "--output-dir", out, "--instances", third, first, second]
    assert run_cli(monkeypatch, *args, "--min-gaussians", threshold) == 2
    message = capsys.readouterr().out
    assert message.count("\n") == 1 and message.startswith(f"unic-lift-export: --output-dir: {out} is not empty")
    assert "pass --overwrite" in message and files(out) == {**foreign, **stale}

    assert run_cli(monkeypatch, *args, "--min-gaussians", threshold, "--overwrite") == 0
    written = files(out)
    assert {name: written[name] for name in foreign if name in written} == foreign
    assert "instance_999999.ply" not in written and "pointclouds/instance_999999.ply" not in written
    kept = [first, second] if (labels == third).sum() < threshold else [first, second, third]
    assert sorted(p.name for p in out.glob("instance_*.ply")) == sorted(
        ["instance_07.ply", *(f"instance_{label}.ply" for label in kept)]
    )
    assert sorted(p.name for p in (out / "pointclouds").iterdir()) == sorted(
        ["notes.txt", *(f"instance_{label}.ply" for label in kept)]
    )
    assert json.loads(written["instances.json"])["num_instances"] == len(kept)
    combined = read_vertices(out / "instances.ply")
    selected = np.flatnonzero(np.isin(labels, kept))
    np.testing.assert_array_equal(combined[INSTANCE_PROPERTY], labels[selected])
    assert_matches_checkpoint(combined, model, selected)
    assert [p.name for p in tmp_path.iterdir()] == ["some"]  # no staging folder left behind


def test_overwrite_refuses_files_it_did_not_write(monkeypatch, capsys, tmp_path, config, labels) -> None:
    label = largest_labels(labels, 1)[0]
    out, outside = tmp_path / "out", tmp_path / "outside"
    args = ["instances", "--load-config", config, "--output-dir", out, "--instances", label, "--overwrite"]
    assert run_cli(monkeypatch, *args) == 0
    capsys.readouterr()
    ours = files(out)
    outside.mkdir()
    (outside / "instances.json").write_bytes(ours["instances.json"])  # a link is refused whatever it points to
    planted = {
        "instance_3.ply": lambda path: path.write_bytes(b"ply\nformat ascii 1.0\ncomment a scan of the user's\n"),
        "instances.json": lambda path: path.symlink_to(outside / "instances.json"),
        f"pointclouds/instance_{label}.ply": lambda path: path.mkdir(),
    }
    for name, plant in planted.items():
        (out / name).unlink(missing_ok=True)  # an earlier export's file
        plant(out / name)
        before = files(out)
        assert run_cli(monkeypatch, *args) == 2, name
        message = capsys.readouterr().out
        assert message == (
            f"unic-lift-export: --output-dir: {out / name} exists and is not a file unic-lift-ns wrote (a link, a "
            "folder or another program's file); move it away\n"
        )
        assert files(out) == before and files(outside) == {"instances.json": ours["instances.json"]}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "outside"]  # nothing staged
        if (out / name).is_dir():
            (out / name).rmdir()
        else:
            (out / name).unlink()

    earlier = (out / f"instance_{label}.ply").stat().st_ino  # the first export's other files are still its own
    assert run_cli(monkeypatch, *args) == 0
    assert files(out) == ours and (out / f"instance_{label}.ply").stat().st_ino != earlier

    edits = tmp_path / "edits"
    edits.mkdir()
    (edits / "edited.ply").write_bytes(b"the user's own edit")
    assert run_cli(monkeypatch, "edit", "--load-config", config, "--output-dir", edits, "--remove", label,
                   "--overwrite") == 2  # fmt: skip
    assert f"--output-dir: {edits / 'edited.ply'} exists and is not a file unic-lift-ns wrote" in printed(capsys)
    assert files(edits) == {"edited.ply": b"the user's own edit"}


def test_default_min_gaussians_leaves_out_specks(monkeypatch, capsys, tmp_path, config, labels) -> None:
    out = tmp_path / "default"
    assert run_cli(monkeypatch, "instances", "--load-config", config, "--output-dir", out) == 0
    values, counts = np.unique(labels, return_counts=True)
    assert sorted(p.name for p in out.glob("instance_*.ply")) == sorted(
        f"instance_{label}.ply" for label in values[counts >= 10]
    )
    specks = int((counts < 10).sum())
    assert (f"Leaving out {specks} instances with fewer than 10 Gaussians" in printed(capsys)) == (specks > 0)
    assert run_cli(monkeypatch, "instances", "--load-config", config, "--output-dir", tmp_path / "x",
                   "--min-gaussians", 0) == 2  # fmt: skip
    assert "--min-gaussians must be at least 1, got 0" in printed(capsys)


def test_export_instance_function(tmp_path, model, labels) -> None:
    label = largest_labels(labels, 1)[0]
    path = export_instance(*model_splats(model, model.gaussian_labels()), label, tmp_path / "viewer")
    assert path == tmp_path / "viewer" / f"instance_{label}.ply"
    assert_matches_checkpoint(read_vertices(path), model, np.flatnonzero(labels == label))
    missing = int(labels.max()) + 1
    with pytest.raises(ValueError, match=f"label {missing}"):
        export_instance(*model_splats(model, model.gaussian_labels()), missing, tmp_path / "viewer")


def test_edit_remove_and_move(monkeypatch, capsys, umask_027, tmp_path, config, model, labels) -> None:
    gone, moved = largest_labels(labels, 2)
    means = model.means.detach().numpy()
    out = tmp_path / "edits"
    base = ["edit", "--load-config", config, "--output-dir", out]
    assert run_cli(monkeypatch, *base, "--remove", gone, "--output-filename", "removed.ply") == 0
    kept = read_vertices(out / "removed.ply")
    assert INSTANCE_PROPERTY not in kept.dtype.names
    assert_matches_checkpoint(kept, model, np.flatnonzero(labels != gone))
    faint = int((model.opacities.detach().numpy()[labels != gone, 0] < NS_EXPORT_MIN_OPACITY).sum())
    assert f"would also drop the {faint} of them with opacity below 1/255" in printed(capsys)
    assert mode(out) == umask_027 and [p.name for p in tmp_path.iterdir()] == ["edits"]  # staged, then moved
    removed = (out / "removed.ply").read_bytes()

    move = ["--move", moved, "--translate", 1, -2, 0.5, "--output-filename", "m.ply"]
    assert run_cli(monkeypatch, *base, *move) == 2  # the folder holds removed.ply now
    assert "--output-dir" in printed(capsys) and not (out / "m.ply").exists()
    assert run_cli(monkeypatch, *base, *move, "--overwrite") == 0
    assert (out / "removed.ply").read_bytes() == removed  # --overwrite replaces only --output-filename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edits"]
    shifted = positions(read_vertices(out / "m.ply"))
    mask = labels == moved
    np.testing.assert_allclose(shifted[mask], means[mask] + [1, -2, 0.5], atol=1e-5)
    np.testing.assert_array_equal(shifted[~mask], means[~mask])


def test_move_rotates_about_the_centroid() -> None:
    rng = np.random.default_rng(0)
    n = 50
    means, quats = rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32)
    zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    splats = Splats(means, zeros(n, 3), quats, zeros(n, 3), zeros(n, 15, 3), zeros(n))
    labels = np.arange(n) % 2
    moved = move_instance(splats, labels, 1, translation=(0.0, 0.0, 1.0), rotation_deg=(0.0, 0.0, 90.0))
    mask = labels == 1
    centroid = splats.means[mask].mean(0)
    turn = Rotation.from_euler("z", 90, degrees=True)
    expected = turn.apply(splats.means[mask] - centroid) + centroid + [0, 0, 1]
    np.testing.assert_allclose(moved.means[mask], expected, atol=1e-5)
    np.testing.assert_array_equal(moved.means[~mask], splats.means[~mask])
    before = Rotation.from_quat(quats[mask][:, [1, 2, 3, 0]])
    after = Rotation.from_quat(moved.quats[mask][:, [1, 2, 3, 0]])
    assert np.allclose((turn * before).as_matrix(), after.as_matrix(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(moved.quats, axis=1), np.linalg.norm(quats, axis=1), rtol=1e-5)


def test_write_ply_has_no_per_vertex_loop(tmp_path) -> None:
    n = 200_000
    zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    splats = Splats(zeros(n, 3), zeros(n, 3), zeros(n, 4), zeros(n, 3), zeros(n, 15, 3), np.arange(n, dtype=np.float32))
    write_ply(tmp_path / "big.ply", splats.vertices(instance=np.arange(n)))
    vertices = read_vertices(tmp_path / "big.ply")
    np.testing.assert_array_equal(vertices["opacity"], np.arange(n))
    np.testing.assert_array_equal(vertices[INSTANCE_PROPERTY], np.arange(n))


def bad_input_message(monkeypatch, capsys, *args) -> str:
    assert run_cli(monkeypatch, *args) == 2
    return printed(capsys)


@dataclass
class ExportKilledMidway:
    """Writes into a staged folder and is sent SIGTERM before it is done."""

    output_dir: Path
    """Folder the export would write."""

    def main(self) -> None:
        with staged(self.output_dir, []) as stage:
            (stage / "instance_1.ply").write_bytes(b"half written")
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 10  # Python runs the handler at its next check, in this thread
            while time.monotonic() < deadline:
                time.sleep(0.01)
        raise AssertionError("SIGTERM did not stop the export")


def test_sigterm_removes_the_staging_folder(monkeypatch, tmp_path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(sys, "argv", ["unic-lift-test", "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stop:
        cli.run_cli("unic-lift-test", ExportKilledMidway)
    assert stop.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []  # neither --output-dir nor the hidden .out.*.tmp
    assert signal.getsignal(signal.SIGTERM) == before  # run_cli puts the previous handler back


def test_bad_inputs_exit_2_and_write_nothing(monkeypatch, capsys, tmp_path, config, labels) -> None:
    out = tmp_path / "out"
    missing = int(labels.max()) + 1
    message = bad_input_message(monkeypatch, capsys, "instances", "--load-config", config, "--output-dir", out,
                                "--instances", missing)  # fmt: skip
    assert f"--instances: no Gaussian has label {missing}" in message
    message = bad_input_message(monkeypatch, capsys, "instances", "--load-config", config, "--output-dir", out,
                                "--min-gaussians", len(labels) + 1)  # fmt: skip
    assert f"--min-gaussians {len(labels) + 1} leaves no instance" in message
    message = bad_input_message(monkeypatch, capsys, "edit", "--load-config", config, "--output-dir", out,
                                "--remove", missing)  # fmt: skip
    assert f"--remove: no Gaussian has label {missing}" in message

    other = tmp_path / "splatfacto" / "config.yml"
    other.parent.mkdir()
    # the same run, but of Splatfacto: config class and model class both swapped
    text = config.read_text().replace("unic_lift_ns.models.unic_lift.UniCLift", "nerfstudio.models.splatfacto.Splatfacto")
    other.write_text(text.replace("method_name: unic-lift", "method_name: splatfacto"))
    message = bad_input_message(monkeypatch, capsys, "instances", "--load-config", other, "--output-dir", out)
    assert f"--load-config: {other} is a 'splatfacto' run" in message
    plain = tmp_path / "segmentation_off" / "config.yml"
    plain.parent.mkdir()
    plain.write_text(config.read_text().replace("segmentation: true", "segmentation: false"))
    message = bad_input_message(monkeypatch, capsys, "instances", "--load-config", plain, "--output-dir", out)
    assert f"--load-config: {plain} was trained with --pipeline.model.segmentation False" in message
    nowhere = tmp_path / "nope.yml"
    message = bad_input_message(monkeypatch, capsys, "instances", "--load-config", nowhere, "--output-dir", out)
    assert "--load-config: no such file" in message
    empty = Path(shutil.copytree(config.parent, tmp_path / "empty_checkpoint"))  # its checkpoint cut to 0 bytes
    for checkpoint in (empty / "nerfstudio_models").glob("*.ckpt"):
        checkpoint.write_bytes(b"")
    message = bad_input_message(monkeypatch, capsys, "instances", "--load-config", empty / "config.yml",
                                "--output-dir", out)  # fmt: skip
    assert f"--load-config: cannot load the checkpoint of {empty / 'nerfstudio_models'}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_checkpoint", "segmentation_off", "splatfacto"]


def test_success_line_counts_what_ns_export_drops() -> None:
    opacities = np.array([-9.0, -5.54, -5.53, 0.0, 4.0], dtype=np.float32)  # logits; 1/255 is -5.5373
    assert faint_note(opacities) == "ns-export gaussian-splat would also drop the 2 of them with opacity below 1/255"


def test_ns_export_gaussian_splat_still_works(tmp_path, config, model, in_process) -> None:
    from nerfstudio.scripts.exporter import entrypoint as ns_export

    run, _ = in_process(ns_export, "gaussian-splat", "--load-config", config, "--output-dir", tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    theirs = read_vertices(tmp_path / "splat.ply")
    ours = Splats.from_model(model).vertices()
    assert theirs.dtype.names == ours.dtype.names
    shown = np.flatnonzero(model.opacities.detach().numpy()[:, 0] >= -5.5373)  # ns-export drops opacity < 1/255
    assert theirs.shape[0] == shown.size > 0
    assert_matches_checkpoint(theirs, model, shown)
