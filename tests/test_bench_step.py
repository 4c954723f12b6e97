"""benchmarks/bench_step.py on a real trained run: every variant is timed and the overhead line is printed."""

from __future__ import annotations

import re
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_step.py"


def test_step_benchmark_times_rgb_only_and_full_steps(trained_run: Path, in_process) -> None:
    run, _ = in_process(BENCH, "steps", "--load-config", trained_run / "config.yml", "--repetitions", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "ms" not in line}
    assert set(rows) == {"rgb only", "+ cluster, semantic", "+ triplet", "full"}, lines
    assert rows["rgb only"].split("|")[3].strip() == "1.00"
    last = re.fullmatch(r"segmentation overhead: (\d+\.\d\d)x \(rgb (\d+) ms, full (\d+) ms, CPU, \d+ threads\)", lines[-1])
    assert last is not None, lines[-1]
    assert float(last.group(1)) > 0 and int(last.group(2)) > 0
