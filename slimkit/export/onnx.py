"""ONNX export with an onnxruntime parity check (the exported graph must agree with PyTorch)."""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import ExportError, MissingDependencyError
from slimkit.fileio import atomic_write
from slimkit.inputs import as_tensor_tuple, size_hint

__all__ = ["ExportResult", "export_onnx", "onnx_session", "onnx_optimized"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float | None  # None when check=False
    opset: int | None
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    exporter: str  # "torchscript" or "dynamo"


def onnx_session(path: str | Path, threads: int | None = None, spinning: bool = True) -> Any:
    """An onnxruntime CPU session (intra-op threads set when given). `spinning=False`: idle worker threads sleep
    instead of spinning, so the process's CPU time counts work only."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError('ONNX needs onnxruntime: pip install "slimkit[onnx]"') from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_optimized(path: str | Path, out: str | Path) -> Path:
    """Write the graph onnxruntime actually runs for `path` (its CPU graph optimisations, as `onnx_session`
    applies them: fused QDQ groups, NCHWc layouts, inserted transposes) to `out`, and return `out`."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError('ONNX needs onnxruntime: pip install "slimkit[onnx]"') from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return Path(out)


def _export(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, opset: int | None, dynamic_batch: bool,
            dynamo: bool, names: tuple[list[str], list[str]]) -> None:
    in_names, out_names = names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = tuple({0: torch.export.Dim.DYNAMIC} for _ in in_names) if dynamic_batch else None
            torch.onnx.export(model, inputs, str(path), dynamo=True, opset_version=opset, input_names=in_names,
                              output_names=out_names, dynamic_shapes=dims, verbose=False)
        else:
            axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None
            torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=opset or 17,
                              input_names=in_names, output_names=out_names, dynamic_axes=axes)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:400] if text else ''}"


def export_onnx(model: nn.Module, path: str | Path, example_inputs: Any, *, opset: int | None = None,
                dynamic_batch: bool = True, check: bool = True, atol: float = 1e-4, dynamo: bool | None = None
                ) -> ExportResult:
    """Export `model` (in eval mode; the caller's model is not changed) and check it with onnxruntime.

    The TorchScript exporter is tried first (fast, dynamic batch); `dynamo=True` forces torch.export instead, and
    it is also the fallback when the TorchScript exporter fails. A parity difference above `atol` (times the
    largest output magnitude when that exceeds 1, since float32 rounding grows with it) raises.
    """
    try:
        import onnx  # noqa: F401 - fail early, with the install hint
    except ImportError:
        raise MissingDependencyError('ONNX export needs onnx: pip install "slimkit[onnx]"') from None
    inputs = as_tensor_tuple(example_inputs, ExportError)
    path = Path(path)
    _check_finite(model)
    net = copy.deepcopy(model).eval()
    in_names = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
    try:
        with torch.no_grad():
            ref = net(*inputs)
    except Exception as e:  # noqa: BLE001 - whatever the model's forward raises (timm asserts the input size)
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ExportError(f"{type(model).__name__} does not run on the example input of shape "
                          f"{[tuple(t.shape) for t in inputs]} ({type(e).__name__}: {why}){size_hint(model, inputs)}"
                          ) from None
    outs = ref if isinstance(ref, (tuple, list)) else (ref,)
    if not all(bool(torch.isfinite(o).all()) for o in outs if isinstance(o, torch.Tensor)):
        raise ExportError(f"{type(model).__name__} outputs NaN or inf for the example input: the model (or the "
                          "input) is broken, not the exporter; check the input values and retrain or reload it")
    out_names = ["output"] if len(outs) == 1 else [f"output{i}" for i in range(len(outs))]
    tries = [True] if dynamo else ([False] if dynamo is False else [False, True])
    found: dict[str, Any] = {}

    def write(tmp: Path) -> None:  # export and check a temporary file: `path` appears only when all passed
        found["dynamo"], found["opset"] = _export_checked(net, inputs, tmp, opset, dynamic_batch, tries,
                                                          (in_names, out_names), model)
        if check:
            found["diff"] = _parity(tmp, path.name, inputs, in_names, outs, atol)

    atomic_write(path, write)
    return ExportResult(path, found.get("diff"), found["opset"], tuple(in_names), tuple(out_names),
                        "dynamo" if found["dynamo"] else "torchscript")


def _check_finite(model: nn.Module) -> None:
    """A model with NaN / inf weights exports fine and computes garbage: refuse it, naming the tensors."""
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ExportError(f"{type(model).__name__} has NaN or inf values in {', '.join(bad[:3])}{more}: the weights "
                          "are broken (training diverged, or a corrupt file); retrain with a lower learning rate or "
                          "reload good weights before exporting")


def _export_checked(net: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, opset: int | None,
                    dynamic_batch: bool, tries: list[bool], names: tuple[list[str], list[str]], model: nn.Module
                    ) -> tuple[bool, int]:
    import onnx

    err: Exception | None = None
    dyn = tries[0]
    for dyn in tries:
        try:
            _export(net, inputs, path, opset, dynamic_batch, dyn, names)
            onnx.checker.check_model(str(path))
            err = None
            break
        except Exception as e:  # noqa: BLE001 - reported below with the exporter's own message
            err = e
    if err is not None:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {_root_cause(err)}") from err
    return dyn, onnx.load(str(path), load_external_data=False).opset_import[0].version


def _parity(path: Path, name: str, inputs: tuple[torch.Tensor, ...], in_names: list[str], outs: Any,
            atol: float) -> float:
    try:
        sess = onnx_session(path)
        got = sess.run(None, {n: t.detach().cpu().numpy() for n, t in zip(in_names, inputs, strict=True)})
    except MissingDependencyError:
        raise
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot run the exported {name} ({_root_cause(e)}); the model may "
                          "use Python/numpy code that tracing turned into constants") from e
    diff = max(float(np.max(np.abs(g - o.detach().cpu().numpy()))) if g.size else 0.0
               for g, o in zip(got, outs, strict=True))
    scale = max(1.0, max(float(o.detach().abs().max()) if o.numel() else 0.0 for o in outs))
    if not diff <= atol * scale:
        raise ExportError(f"ONNX output differs from PyTorch by {diff:.3g} (> atol {atol} x output scale "
                          f"{scale:.3g}) for {name}: an op is exported inexactly; try dynamo=True or another "
                          "opset")
    return diff
