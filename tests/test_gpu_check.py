"""benchmarks/gpu_check.sh, the prepared GPU check, run end to end with DEVICE=cpu at small sizes: every section
runs, nothing fails, and its one log holds the overhead line and the scale table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_gpu_check_runs_every_section_on_cpu(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, DEVICE="cpu", PYTHON=sys.executable, TRAIN_STEPS="2", REPETITIONS="1", SCALE_SIZES="3000",
               OUT=str(tmp_path), TMPDIR=str(scratch))  # fmt: skip
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    log = (tmp_path / "gpu_check.log").read_text()
    assert run.returncode == 0, log[-4000:]
    assert "FAILED" not in log
    for section in ("=== ", "GPU-marked tests", "bench_step on assets/demo", "3D loss at scale", "done, status 0"):
        assert section in log, section
    assert "segmentation overhead: " in log and "CPU, " in log
    assert "| 3000 |" in log  # the scale table's row
    assert not list(scratch.glob("bench_step_*"))  # bench_step's throwaway runs are removed when it exits
