"""What a CUDA run would trip over, found on the CPU: device leaks and device-to-host syncs of our own code.

:class:`DeviceAudit` is a ``TorchFunctionMode`` (the mechanism behind ``torch.set_default_device``) that sees every
torch call while it is active:

* **Leaks.** A tensor that our package (``unic_lift_ns``) makes on the host stays there on a CUDA run: a factory
  (``torch.zeros``, ``torch.tensor``, ``torch.arange``, ...) called without ``device=``, ``torch.from_numpy``, or
  ``.cpu()``. Such tensors are marked, the mark follows every result computed from marked tensors only, and
  ``.to(device)`` removes it. An op that mixes a marked tensor of more than one element with an unmarked one
  (model parameters, batch data, anything made with ``device=``) would raise on CUDA, so it raises
  :class:`DeviceLeak` here, naming our line. Like on CUDA, 0-dim host tensors and host indices may mix.
  ``torch.set_default_device("meta")`` catches the factories only: ``from_numpy`` and ``.cpu()`` still give host
  tensors, and meta tensors cannot be copied back, so code that moves its host results to the device correctly
  would fail too.
* **Syncs.** Calls that copy device data to the host or wait for the device (``.item()``, ``.tolist()``,
  ``.numpy()``, ``.cpu()``, ``bool()``/``int()``/``float()`` of a tensor, ``nonzero``, ``unique``, boolean-mask
  indexing, ...) on unmarked tensors are recorded with the first non-torch frame that made them: ours, or upstream
  (nerfstudio, gsplat, torchmetrics).

The stand-ins for gsplat's CUDA kernels (``unic_lift_ns.rasterization.reference_kernels``) are neither ours nor
upstream: :func:`unaudited_kernels` runs them outside the audit, which also keeps the audit fast (every torch call
it sees walks the stack), and raises when our code hands them a host tensor, as gsplat's kernels would on CUDA.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._pytree import tree_flatten

from unic_lift_ns.rasterization.gsplat_kernels import GsplatKernels

PACKAGE = f"{Path(__file__).resolve().parents[1] / 'unic_lift_ns'}/"
TORCH_DIR = f"{Path(torch.__file__).parent}/"
HERE = str(Path(__file__).resolve())
MARK = "_made_on_host"
FOLLOWS = "_follows_its_device"  # made by our code with device=: like the tensor whose device it names

FACTORIES = _device_constructors()
# Whatever the arguments: these wait for the device or copy from it.
SYNCS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
    torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero,
    torch.Tensor.unique, torch.unique, torch.Tensor.unique_consecutive, torch.unique_consecutive,
    torch.Tensor.masked_select, torch.masked_select, torch.Tensor.argwhere, torch.argwhere, torch.Tensor.bincount,
    torch.bincount,
}  # fmt: skip
INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_, torch.Tensor.index_put}
MOVES = {torch.Tensor.to, torch.Tensor.cuda}


class DeviceLeak(RuntimeError):
    """A tensor made on the host by our code meets the model's tensors: an error on CUDA."""


@dataclass(frozen=True)
class Sync:
    """One device-to-host sync: who made it, the torch call, and the caller's ``file:line (function)``."""

    owner: str  # "ours" or "upstream"
    call: str
    where: str


def _marked(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and bool(getattr(value, MARK, ""))


def _follows(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and getattr(value, FOLLOWS, False)


def _mark(outputs: Any, made_at: str) -> None:
    """Mark tensors as made on the host, at ``made_at`` (our line that made them or the first of their inputs)."""
    for value in tree_flatten(outputs)[0]:
        if isinstance(value, torch.Tensor):
            try:
                setattr(value, MARK, made_at)
            except (AttributeError, RuntimeError):  # e.g. a tensor subclass without __dict__
                pass


def _name(func: Callable) -> str:
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    prefix = "Tensor." if owner is torch.Tensor or owner is torch._C.TensorBase else "torch."
    return prefix + getattr(func, "__name__", repr(func))


class DeviceAudit(TorchFunctionMode):
    """Raise on device leaks of our code and record device syncs (see the module docstring)."""

    paused = 0  # > 0 while unaudited kernels run

    def __init__(self, ours: str = PACKAGE) -> None:
        """``ours``: the folder whose code is audited (the package; a test of the audit itself passes its own)."""
        super().__init__()
        self.ours = ours
        self.syncs: List[Sync] = []
        self._from_numpy = torch.from_numpy

    def __enter__(self) -> "DeviceAudit":
        from_numpy = self._from_numpy

        def marked_from_numpy(array: Any) -> torch.Tensor:
            tensor = from_numpy(array)
            caller = self._caller()
            if caller is not None and caller[0] == "ours":
                _mark(tensor, caller[1])
            return tensor

        torch.from_numpy = marked_from_numpy  # type: ignore[assignment]
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        torch.from_numpy = self._from_numpy  # type: ignore[assignment]
        return super().__exit__(*exc)

    def syncs_of(self, owner: str) -> List[Sync]:
        return [sync for sync in self.syncs if sync.owner == owner]

    def _caller(self) -> Optional[Tuple[str, str]]:
        """``(owner, "file:line (function)")`` of the first frame outside torch and this file."""
        frame = sys._getframe(2)
        while frame is not None:
            path = frame.f_code.co_filename
            if not path.startswith(TORCH_DIR) and path != HERE and not path.startswith("<"):
                owner = "ours" if path.startswith(self.ours) else "upstream"
                return owner, f"{path.removeprefix(self.ours)}:{frame.f_lineno} ({frame.f_code.co_name})"
            frame = frame.f_back
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if DeviceAudit.paused:
            return func(*args, **kwargs)
        if func in FACTORIES:
            result = func(*args, **kwargs)
            caller = self._caller()
            if caller is not None and caller[0] == "ours":
                if kwargs.get("device") is None:
                    _mark(result, caller[1])
                else:  # device=x.device: on CUDA it is where x is, so it may meet host and device tensors alike
                    setattr(result, FOLLOWS, True)
            return result
        tensors = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
        checked = tensors
        if func in INDEXING:  # host indices may index device tensors; a host value may not be written into them
            checked = [args[0]] + ([args[2]] if len(args) > 2 and isinstance(args[2], torch.Tensor) else [])
        host = [t for t in checked if _marked(t) and t.dim() > 0]
        device = [t for t in checked if not _marked(t) and not _follows(t)]
        if host and device and func not in MOVES:
            caller = self._caller()
            if caller is not None:
                made = "; ".join(f"{tuple(t.shape)} from {getattr(t, MARK)}" for t in host)
                raise DeviceLeak(
                    f"{caller[1]}: {_name(func)} mixes a tensor made on the host ({made}: no device=, from_numpy or "
                    ".cpu()) with the model's tensors; this fails on CUDA"
                )
        to_host = _copies_to_host(func, args)
        if func in SYNCS or to_host or (func in INDEXING and self._bool_index(args)):
            subject = tensors[0] if tensors else None
            caller = self._caller()
            if subject is not None and not _marked(subject) and caller is not None:
                self.syncs.append(Sync(caller[0], _name(func), caller[1]))
        result = func(*args, **kwargs)
        moved = func in MOVES and _moves_to_a_device(func, args, kwargs)
        caller = self._caller() if to_host else None
        if caller is not None and caller[0] == "ours":
            _mark(result, caller[1])
        elif moved and result is args[0] and _marked(result):  # on CUDA a copy: the host tensor stays marked
            result = result.view_as(result)
            _mark(result, "")
        elif not moved and tensors and not any(not _marked(t) and not _follows(t) for t in tensors):
            made_on_host = [t for t in tensors if _marked(t)]
            if made_on_host:  # computed from host tensors only (and tensors that follow them): on the host
                _mark(result, getattr(made_on_host[0], MARK))
            elif isinstance(result, torch.Tensor):
                setattr(result, FOLLOWS, True)
        return result

    @staticmethod
    def _bool_index(args: Tuple) -> bool:
        """Boolean-mask indexing of a device tensor (a nonzero on the device); ``t[mask] = scalar`` is a fill."""
        if len(args) < 2:
            return False
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        has_mask = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and not _marked(i) for i in index)
        scalar_fill = len(args) > 2 and not (isinstance(args[2], torch.Tensor) and args[2].dim() > 0)
        return has_mask and not scalar_fill


def _moves_to_a_device(func: Callable, args: Tuple, kwargs: Dict) -> bool:
    """Whether a ``.to``/``.cuda`` call names a device (or a device tensor whose device it takes), not only a
    dtype."""
    if func is torch.Tensor.cuda or "device" in kwargs:
        return True
    return any(isinstance(a, (torch.device, str)) or (isinstance(a, torch.Tensor) and not _marked(a)) for a in args[1:])


def _copies_to_host(func: Callable, args: Tuple) -> bool:
    """``.cpu()`` (``.to("cpu")`` cannot be told from ``.to(device)`` on a CPU run, where the device is "cpu")."""
    return func is torch.Tensor.cpu


def unaudited_kernels(kernels: GsplatKernels) -> GsplatKernels:
    """``kernels`` (stand-ins for gsplat's CUDA kernels) running outside any :class:`DeviceAudit`; a host tensor of
    ours among their arguments raises :class:`DeviceLeak`, as it would in gsplat's kernels on CUDA."""

    def unaudited(name: str, kernel: Callable) -> Callable:
        @functools.wraps(kernel)
        def run(*args: Any, **kwargs: Any) -> Any:
            host = [t for t in tree_flatten((args, kwargs))[0] if _marked(t) and t.dim() > 0]
            if host:
                made = "; ".join(f"{tuple(t.shape)} from {getattr(t, MARK)}" for t in host)
                raise DeviceLeak(f"gsplat's {name} gets a tensor made on the host ({made}); this fails on CUDA")
            DeviceAudit.paused += 1
            try:
                return kernel(*args, **kwargs)
            finally:
                DeviceAudit.paused -= 1

        return run

    return GsplatKernels(**{f.name: unaudited(f.name, getattr(kernels, f.name)) for f in fields(kernels)})
