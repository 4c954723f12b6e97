"""Shared fixtures: tiny generated scenes (seconds to make on a 2-core CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unic_lift_ns.synth.generate import SynthConfig, generate_scene


def make_scene(path: Path, **overrides) -> Path:
    options = dict(num_objects=6, num_views=16, resolution=48, seed=0)
    options.update(overrides)
    return generate_scene(SynthConfig(output=path, **options))


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """6 objects, 16 views of 48x48, realistic segmenter noise."""
    return make_scene(tmp_path_factory.mktemp("scenes") / "tiny")
