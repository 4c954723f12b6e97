"""CappedStrategy: gsplat's DefaultStrategy growth, stopped at a ceiling on the number of Gaussians."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from gsplat.strategy import DefaultStrategy

from conftest import setup_model
from unic_lift_ns.models.capped_strategy import CappedStrategy
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig

NUM = 100


def grown(max_gaussians, scale: float = 0.1) -> tuple[int, torch.Tensor]:
    """Gaussians after one refinement of NUM whose mean gradients are 0, 0.001, ..., 0.099 (89 above the
    threshold 0.0105), and the centres of the Gaussians that were not grown (the refinement keeps them first)."""
    torch.manual_seed(0)
    params = torch.nn.ParameterDict({
        "means": torch.randn(NUM, 3), "scales": torch.full((NUM, 3), math.log(scale)),
        "quats": torch.randn(NUM, 4), "opacities": torch.zeros(NUM), "sh0": torch.zeros(NUM, 1, 3),
    })  # fmt: skip
    optimizers = {name: torch.optim.Adam([p], lr=1e-3) for name, p in params.items()}
    base = DefaultStrategy(grow_grad2d=0.0105, grow_scale3d=0.01, refine_scale2d_stop_iter=0, verbose=False)
    strategy = CappedStrategy.of(base, max_gaussians)
    state = {"grad2d": torch.arange(NUM, dtype=torch.float32) * 0.001, "count": torch.ones(NUM),
             "radii": torch.zeros(NUM), "scene_scale": 1.0}  # fmt: skip
    means = params["means"].detach().clone()
    strategy._grow_gs(params, optimizers, state, step=1000)
    assert (strategy.grow_grad2d, strategy.grow_scale2d) == (base.grow_grad2d, base.grow_scale2d)  # restored
    kept = [i for i in range(NUM) if (params["means"].detach() == means[i]).all(-1).any()]
    return len(params["means"]), torch.tensor(kept)


def test_of_keeps_every_setting_of_the_strategy():
    base = DefaultStrategy(grow_grad2d=0.003, refine_every=77, verbose=False)
    assert dataclasses.asdict(CappedStrategy.of(base, 5)) == {**dataclasses.asdict(base), "max_gaussians": 5}


def test_without_a_ceiling_or_under_it_growth_is_gsplats():
    assert grown(None)[0] == NUM + 89  # every Gaussian above the threshold is split in two
    assert grown(10_000)[0] == NUM + 89


def test_at_the_ceiling_only_the_largest_gradients_grow():
    count, untouched = grown(120)
    assert count == 120
    # the 80 Gaussians with the smallest gradients were not grown (split Gaussians move their centres)
    assert untouched.tolist() == list(range(80))


@pytest.mark.parametrize("ceiling", [NUM, NUM - 10])
def test_no_growth_once_the_ceiling_is_reached(ceiling):
    assert grown(ceiling)[0] == NUM


def test_max_gaussians_sets_the_models_strategy():
    plain = setup_model(UniCLiftModelConfig())
    assert type(plain.strategy) is DefaultStrategy  # None: Splatfacto's own strategy
    capped = setup_model(UniCLiftModelConfig(max_gaussians=500))
    assert isinstance(capped.strategy, CappedStrategy) and capped.strategy.max_gaussians == 500
    assert dataclasses.asdict(capped.strategy) == {**dataclasses.asdict(plain.strategy), "max_gaussians": 500}
