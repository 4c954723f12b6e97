"""Benchmark scenes: generated once per object count and reused while their settings match."""

from __future__ import annotations

import json
from pathlib import Path

from unic_lift_ns.synth.generate import SynthConfig, generate_scene, scene_settings


def prepare_scene(cfg: SynthConfig) -> tuple[Path, bool]:
    """Generate ``cfg.output`` or reuse it when its ``scene.json`` matches; returns (folder, reused).

    Raises a ValueError naming the folder and the differing settings when an existing scene does not match.
    """
    record = cfg.output / "scene.json"
    if not cfg.output.exists():
        return generate_scene(cfg), False
    if not record.is_file():
        raise ValueError(f"{cfg.output} exists but is not a generated scene (no scene.json); remove it")
    found = json.loads(record.read_text()).get("config", {})
    wanted = scene_settings(cfg)
    differing = sorted(k for k in wanted if found.get(k) != wanted[k])
    if differing:
        details = ", ".join(f"{k}: {found.get(k)!r} != {wanted[k]!r}" for k in differing)
        raise ValueError(
            f"{cfg.output} was generated with other settings ({details}); remove it or use another --scenes-dir"
        )
    return cfg.output, True
