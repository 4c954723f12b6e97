"""Physics-settled clutter: drop pybullet's bundled object models onto a floor and let them settle.

This follows the Messy Rooms recipe (Contrastive Lift, `002_*` section 4): N objects are spawned without
overlap above a floor whose area grows linearly with N, dropped, and simulated until they come to rest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

GRAVITY = -9.81
SIM_HZ = 240
RANDOM_MODELS = 1000  # pybullet_data/random_urdfs/000 ... 999


@dataclass(frozen=True)
class PlacedObject:
    """One settled object; everything needed to load it again with the same pose and look."""

    instance_id: int
    """Ground-truth instance ID (1..N), consistent across all views."""
    model: str
    """URDF path relative to `pybullet_data`."""
    scale: float
    """Global scaling applied when loading the URDF."""
    color: Tuple[float, float, float]
    """RGB colour in [0, 1] given to every visual shape."""
    position: Tuple[float, float, float]
    """Settled position of the base (metres, world frame, z up)."""
    orientation: Tuple[float, float, float, float]
    """Settled orientation of the base as a quaternion (x, y, z, w)."""

    def to_json(self) -> dict:
        return asdict(self)


def data_path() -> Path:
    """Folder of the models shipped in the `pybullet` wheel."""
    import pybullet_data

    return Path(pybullet_data.getDataPath())


def floor_side(num_objects: int, base_side: float) -> float:
    """Side of the square floor area: its area grows linearly with N (side ~ sqrt(N/25))."""
    return base_side * math.sqrt(num_objects / 25.0)


def _vivid_color(rng: np.random.Generator) -> Tuple[float, float, float]:
    hue = rng.random()
    sat = rng.uniform(0.45, 0.95)
    val = rng.uniform(0.45, 0.95)
    i = int(hue * 6.0) % 6
    f = hue * 6.0 - int(hue * 6.0)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return (round(rgb[0], 4), round(rgb[1], 4), round(rgb[2], 4))


def load_object(client: int, obj: PlacedObject, position=None, orientation=None) -> int:
    """Load `obj` into a pybullet client and give it its colour; returns the body unique ID."""
    import pybullet as p

    body = p.loadURDF(
        str(data_path() / obj.model),
        basePosition=position if position is not None else obj.position,
        baseOrientation=orientation if orientation is not None else obj.orientation,
        globalScaling=obj.scale,
        physicsClientId=client,
    )
    for shape in p.getVisualShapeData(body, physicsClientId=client):
        p.changeVisualShape(body, shape[1], rgbaColor=[*obj.color, 1.0], physicsClientId=client)
    return body


def load_floor(client: int) -> int:
    """The textured (checkerboard) floor plane; its pixels are the 'background' class."""
    import pybullet as p

    return p.loadURDF(str(data_path() / "plane.urdf"), physicsClientId=client)


def _add_walls(client: int, half: float, height: float = 0.6) -> None:
    """Invisible (collision-only) walls so that no object rolls out of the floor area."""
    import pybullet as p

    thickness = 0.05
    for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
        extents = [thickness, half + thickness, height] if axis == 0 else [half + thickness, thickness, height]
        pos = [0.0, 0.0, height]
        pos[axis] = sign * (half + thickness)
        shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=extents, physicsClientId=client)
        p.createMultiBody(baseMass=0, baseCollisionShapeIndex=shape, basePosition=pos, physicsClientId=client)


def settle_objects(
    num_objects: int,
    side: float,
    rng: np.random.Generator,
    scale_range: Tuple[float, float] = (1.0, 2.2),
    max_seconds: float = 6.0,
) -> List[PlacedObject]:
    """Spawn `num_objects` random models on a lattice above a `side` x `side` floor, drop them and simulate
    until they rest (or `max_seconds` pass). Deterministic for a given `rng` state."""
    import pybullet as p

    if num_objects < 1:
        raise ValueError(f"--num-objects must be at least 1, got {num_objects}")
    client = p.connect(p.DIRECT)
    try:
        p.setGravity(0, 0, GRAVITY, physicsClientId=client)
        p.setTimeStep(1.0 / SIM_HZ, physicsClientId=client)
        load_floor(client)
        _add_walls(client, side / 2.0)

        models = rng.choice(RANDOM_MODELS, size=num_objects, replace=num_objects > RANDOM_MODELS)
        per_row = max(1, int(side / 0.25))
        cell = side / per_row
        slots = rng.permutation(per_row * per_row)
        bodies, specs = [], []
        for k in range(num_objects):
            slot = slots[k % len(slots)]
            layer = k // len(slots)
            x = -side / 2 + cell * (slot % per_row + 0.5) + rng.uniform(-0.2, 0.2) * cell
            y = -side / 2 + cell * (slot // per_row + 0.5) + rng.uniform(-0.2, 0.2) * cell
            z = 0.2 + 0.3 * layer
            quat = rng.normal(size=4)
            quat = tuple(float(v) for v in quat / np.linalg.norm(quat))
            spec = PlacedObject(
                instance_id=k + 1,
                model=f"random_urdfs/{models[k]:03d}/{models[k]:03d}.urdf",
                scale=round(float(rng.uniform(*scale_range)), 4),
                color=_vivid_color(rng),
                position=(x, y, z),
                orientation=quat,  # type: ignore[arg-type]
            )
            bodies.append(load_object(client, spec))
            specs.append(spec)

        check_every = SIM_HZ // 4
        for step in range(int(max_seconds * SIM_HZ)):
            p.stepSimulation(physicsClientId=client)
            if step % check_every == check_every - 1:
                speed = max(np.linalg.norm(p.getBaseVelocity(b, physicsClientId=client)[0]) for b in bodies)
                if speed < 1e-3:
                    break

        settled = []
        for spec, body in zip(specs, bodies):
            pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=client)
            settled.append(
                PlacedObject(
                    instance_id=spec.instance_id,
                    model=spec.model,
                    scale=spec.scale,
                    color=spec.color,
                    position=tuple(round(float(v), 6) for v in pos),  # type: ignore[arg-type]
                    orientation=tuple(round(float(v), 6) for v in orn),  # type: ignore[arg-type]
                )
            )
        return settled
    finally:
        p.disconnect(client)
