"""config.yml files written before the shared layer got its own names (#28) still load: ``tests/data/config_before_28``
holds the three methods' configs as `ns-train` wrote them then (data and output paths made relative)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unic_lift_ns.baselines.contrastive_lift import ContrastiveLiftModelConfig, ContrastiveLiftPipeline
from unic_lift_ns.baselines.gaussian_clustering import GaussianClusteringModelConfig
from unic_lift_ns.data.datamanager import SegmentationDataManager, SegmentationDataManagerConfig
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig
from unic_lift_ns.pipeline import SegmentationPipeline, SegmentationPipelineConfig
from unic_lift_ns.trainer import SegmentationTrainer, SegmentationTrainerConfig

OLD = Path(__file__).parent / "data" / "config_before_28"


@pytest.mark.parametrize(
    "method, model, pipeline",
    [
        ("unic-lift", UniCLiftModelConfig, SegmentationPipeline),
        ("contrastive-lift", ContrastiveLiftModelConfig, ContrastiveLiftPipeline),
        ("gaussian-clustering", GaussianClusteringModelConfig, SegmentationPipeline),
    ],
)
def test_a_config_written_before_28_loads_with_todays_classes(method: str, model: type, pipeline: type) -> None:
    text = (OLD / f"{method}.yml").read_text()
    assert "UniCLiftTrainerConfig" in text and "UniCLiftDataManagerConfig" in text  # the old names are in the file
    config = yaml.load(text, Loader=yaml.Loader)
    assert type(config) is SegmentationTrainerConfig and config._target is SegmentationTrainer
    datamanager = config.pipeline.datamanager
    assert type(datamanager) is SegmentationDataManagerConfig and datamanager._target is SegmentationDataManager
    assert config.method_name == method and config.pipeline.datamanager.data == Path("scene")
    assert isinstance(config.pipeline, SegmentationPipelineConfig) and config.pipeline._target is pipeline
    assert type(config.pipeline.model) is model and config.pipeline.model._target is model()._target
