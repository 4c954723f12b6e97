"""The path under which runs trained before the ``models/`` package name their model: their config.yml says
``unic_lift_ns.model.UniCLiftModelConfig``, so it must keep resolving. New code imports
:mod:`unic_lift_ns.models.unic_lift`."""

from unic_lift_ns.models.unic_lift import UniCLiftModel, UniCLiftModelConfig

__all__ = ["UniCLiftModel", "UniCLiftModelConfig"]
