"""Run the real `ns-train` CLI in this process, then record its peak memory and CPU time.

Usage: ``python -m unic_lift_ns.comparison.ns_train USAGE_JSON [ns-train arguments...]``. USAGE_JSON gets
``{"cuda_max_allocated": bytes or null, "max_rss": bytes, "cpu_seconds": float}``; peak RSS and CPU time cover
this process and its children. CPU time tells how much of the wall clock was lost to a busy machine.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def usage() -> dict:
    """CUDA max allocated (when CUDA was used), peak RSS (bytes) and CPU seconds of this process and its children."""
    import torch

    cuda = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_initialized() else None
    stats = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    rss = max(s.ru_maxrss for s in stats) * 1024  # Linux reports ru_maxrss in KiB
    return {"cuda_max_allocated": cuda, "max_rss": rss, "cpu_seconds": sum(s.ru_utime + s.ru_stime for s in stats)}


def main(argv: list[str]) -> None:
    """Train with ``argv[1:]`` as the `ns-train` arguments; write the resource usage to ``argv[0]`` afterwards."""
    from nerfstudio.scripts.train import entrypoint

    usage_file = Path(argv[0])
    sys.argv = ["ns-train", *argv[1:]]
    try:
        entrypoint()
    finally:
        usage_file.write_text(json.dumps(usage()))


if __name__ == "__main__":
    main(sys.argv[1:])
