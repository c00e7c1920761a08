"""Load trained weights into a built model: safetensors, or a PyTorch file read with `weights_only=True`.

A user's weights come in many layouts: a bare state dict, a training checkpoint holding it under `state_dict` /
`model` / `model_state_dict` (and an EMA copy under `state_dict_ema` / `model_ema`), keys prefixed by a wrapper
(`module.` from DDP, `model.` from Lightning, `_orig_mod.` from torch.compile), torchvision keys for slimkit's
`torchvision:<name>` wrapper (which prefixes them with `model.`), original-format checkpoints timm converts with its
`checkpoint_filter_fn`. `load_weights` finds the tensors, maps their names onto the model, and loads them. Two
differences are expected and said so: a classifier of another class count (left freshly initialised: transfer
learning) and a first convolution of another input-channel count (adapted as timm's `adapt_input_conv` does).
Anything else that does not fit is a `CheckpointError` naming the keys. A pickle that carries code (a whole model
object, a custom class) is refused: slimkit never unpickles code.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.errors import CheckpointError

__all__ = ["LoadReport", "load_weights", "read_state_dict"]

_PLAIN = ("state_dict", "model_state_dict", "model", "module", "net")  # where checkpoints keep the weights
_EMA = ("state_dict_ema", "model_ema", "ema")  # ... and their exponential-moving-average copy
_WRAPPERS = ("module.", "model.", "_orig_mod.")  # DDP, Lightning (and similar), torch.compile
_ADAPTER = "model."  # slimkit's torchvision wrapper keeps the torchvision model as `.model`
# plain data classes training scripts put beside the weights (timm's train.py saves its argparse.Namespace)
_SAFE_GLOBALS = [argparse.Namespace]


@dataclass(frozen=True)
class LoadReport:
    """What `load_weights` did: where the tensors came from and which ones did not load as they were."""

    path: str
    format: str  # "safetensors" or "torch"
    container: str | None  # the checkpoint key the state dict was found under ("state_dict", "state_dict_ema", ...)
    removed_prefix: str  # wrapper prefix taken off the file's keys ("module.", "model.", "")
    added_prefix: str  # prefix put on to fit the model (slimkit's torchvision wrapper: "model.")
    converted: str | None  # a conversion applied to the file's tensors (timm's checkpoint_filter_fn)
    loaded: tuple[str, ...]  # model tensors taken from the file
    replaced: tuple[str, ...]  # classifier tensors of another class count, left freshly initialised
    adapted: tuple[str, ...]  # first-convolution tensors adapted to the model's input channels
    file_classes: int | None  # the file's class count when its classifier differs from the model's
    model_classes: int | None  # the model's class count when its classifier was replaced
    notes: tuple[str, ...] = ()  # other things worth saying (an unused EMA copy, ...)

    @property
    def head_replaced(self) -> bool:
        return bool(self.replaced)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def brief(self) -> dict[str, Any]:
        """The report without the list of loaded tensors (for run summaries)."""
        keep = ("path", "container", "removed_prefix", "converted", "replaced", "adapted", "file_classes")
        return {"loaded": len(self.loaded), **{k: v for k, v in self.to_dict().items() if k in keep and v}}

    def describe(self) -> str:
        """One readable line (or two) for the user."""
        where = [f"under '{self.container}'"] if self.container else []
        where += [f"'{self.removed_prefix}' prefix removed"] if self.removed_prefix else []
        where += [f"'{self.added_prefix}' prefix added"] if self.added_prefix else []
        where += [f"converted by {self.converted}"] if self.converted else []
        text = f"weights: {len(self.loaded)} tensors loaded from {self.path}" + (f" ({', '.join(where)})"
                                                                                   if where else "")
        if self.replaced:
            classes = (f" (the file has {self.file_classes} classes, the model {self.model_classes})"
                       if self.file_classes else "")
            text += (f"; classifier {', '.join(self.replaced)} replaced{classes}: freshly initialised, train it "
                     "(transfer learning)")
        if self.adapted:
            text += f"; {', '.join(self.adapted)} adapted to the model's input channels"
        return text + "".join(f"; {n}" for n in self.notes)


# -- reading -------------------------------------------------------------------------------------------------------

def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK"))


def _read_torch(path: Path) -> Any:
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_SAFE_GLOBALS):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if not found:
            why = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            raise CheckpointError(f"{path}: not a readable safetensors or PyTorch file ("
                                  f"{why.group(1).strip() if why else str(e).splitlines()[0]})") from None
        what = f"a Python object ({found.group(1)})"
        raise CheckpointError(
            f"{path} holds {what}, not only tensors: slimkit reads PyTorch files with weights_only=True and never "
            "runs the code a pickle carries. Save a state dict instead (torch.save(model.state_dict(), 'w.pt'), or "
            "safetensors.torch.save_file(model.state_dict(), 'w.safetensors')); if you trust the file, convert it "
            "once: torch.save(torch.load(path, weights_only=False).state_dict(), 'w.pt')") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError / EOFError / zip errors for unreadable files
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "TorchScript" in text:
            raise CheckpointError(f"{path} is a TorchScript archive, not a state dict: save the weights with "
                                  "torch.save(model.state_dict(), 'w.pt') (or safetensors)") from None
        raise CheckpointError(f"{path}: not a readable safetensors or PyTorch file ({text[:200]})") from None


def _tensors(obj: Any) -> dict[str, torch.Tensor] | None:
    """The tensor entries of a mapping that is a state dict (its values are tensors, not nested mappings)."""
    if not isinstance(obj, Mapping) or any(isinstance(v, Mapping) for v in obj.values()):
        return None
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return sd or None


def _unwrap(obj: Any, ema: bool, path: Path) -> tuple[dict[str, torch.Tensor], str | None, tuple[str, ...]]:
    """Find the state dict inside a checkpoint: (tensors, the key it was under, notes)."""
    sd = _tensors(obj)
    if sd is not None:
        return sd, None, ()
    if isinstance(obj, Mapping):
        order = (_EMA + _PLAIN) if ema else (_PLAIN + _EMA)
        for key in order:
            inner = obj.get(key)
            if not isinstance(inner, Mapping):
                continue
            try:
                sd, sub, _ = _unwrap(inner, ema, path)
            except CheckpointError:
                continue
            others = [k for k in (_PLAIN + _EMA) if k != key and k in obj and isinstance(obj[k], Mapping)]
            notes = tuple(f"the file also holds '{k}' (not used" + (": ema=True takes it)" if k in _EMA else ")")
                          for k in others)
            return sd, key if sub is None else f"{key}.{sub}", notes
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(f"{path}: found no weights in it (keys {keys}); slimkit looks for a state dict, or one "
                              f"under {', '.join(_PLAIN + _EMA)}")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")


def read_state_dict(path: str | Path, *, ema: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a weights file and where they came from ({"format", "container", "notes"}).

    `.safetensors` is read as such; any other file with `torch.load(weights_only=True)` (a pickle carrying code is
    refused). With `ema=True` an EMA copy (`state_dict_ema`, `model_ema`) is preferred over the plain weights.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: pass the weights file in it (e.g. {path / 'model.safetensors'}); "
                              "a slimkit run folder is used whole with --baseline / --teacher-ckpt")
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} not found: check the path")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {"format": "safetensors", "container": None, "notes": ()}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    sd, container, notes = _unwrap(_read_torch(path), ema, path)
    return sd, {"format": "torch", "container": container, "notes": notes}


# -- mapping keys --------------------------------------------------------------------------------------------------

def _candidates(sd: dict[str, torch.Tensor], own: set[str]) -> list[tuple[str, str, dict[str, torch.Tensor]]]:
    """Key layouts to try, fewest changes first: (removed prefix, added prefix, tensors)."""
    variants, cur, removed = [("", sd)], sd, ""
    while True:
        prefix = next((p for p in _WRAPPERS if all(k.startswith(p) for k in cur)), None)
        if prefix is None:
            break
        cur = {k[len(prefix):]: v for k, v in cur.items()}
        removed += prefix
        variants.append((removed, cur))
    adapter = all(k.startswith(_ADAPTER) for k in own)
    out = []
    for rem, v in variants:
        out.append((rem, "", v))
        if adapter:
            out.append((rem, _ADAPTER, {_ADAPTER + k: t for k, t in v.items()}))
    return sorted(out, key=lambda c: len(c[0]) + len(c[1]))


def _best_layout(sd: dict[str, torch.Tensor], own: set[str]) -> tuple[str, str, dict[str, torch.Tensor]]:
    best, score = None, -1
    for cand in _candidates(sd, own):
        s = len(own & set(cand[2]))
        if s > score:
            best, score = cand, s
    assert best is not None
    return best


def _timm_filter(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """timm's own conversion of an original-format checkpoint for this model family, when it has one."""
    module = sys.modules.get(type(model).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    if not type(model).__module__.startswith("timm.") or fn is None:
        return None
    try:
        out = fn(dict(sd), model)
    except Exception:  # noqa: BLE001 - the filter is written for its own checkpoints; anything else is no match
        return None
    return _tensors(out)


# -- what may differ: the classifier and the first convolution -------------------------------------------------------

def _named(model: nn.Module, modules: list[nn.Module]) -> list[str]:
    ids = {id(m) for m in modules}
    return [n for n, m in model.named_modules() if id(m) in ids]


def _head_modules(model: nn.Module) -> list[str]:
    """Names of the classifier layers: `get_classifier()` (timm / slimkit interface), else the last linear or conv
    layer; plus auxiliary classifiers (a linear layer named `aux...` predicting the model's classes)."""
    heads: list[nn.Module] = []
    if hasattr(model, "get_classifier"):
        try:
            got = model.get_classifier()
        except Exception:  # noqa: BLE001 - a model without a recognisable classifier
            got = None
        heads = [m for m in (got if isinstance(got, (tuple, list)) else [got]) if isinstance(m, nn.Module)]
        heads = [m for m in heads if any(True for _ in m.parameters())]
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not heads and layers:
        heads = [layers[-1]]
    classes = getattr(model, "num_classes", None) or (getattr(heads[0], "out_features", None) if heads else None)
    names = _named(model, heads)
    return names + [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == classes
                    and "aux" in n.lower() and n not in names]


def _input_convs(model: nn.Module) -> set[str]:
    """Weight names of the convolutions that read the input image: the first conv (timm's `first_conv`, else the
    first Conv2d) and any other dense conv taking as many channels (parallel stem branches, e.g. RepVGG)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("first_conv") if isinstance(cfg, Mapping) else None
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if not (isinstance(name, str) and name in convs):
        name = next(iter(convs), None)
    if name is None:
        return set()
    cin = convs[name].in_channels
    return {f"{n}.weight" for n, m in convs.items() if m.groups == 1 and m.in_channels == cin} | {f"{name}.weight"}


def _owner(key: str, modules: list[str]) -> bool:
    return any(key.startswith(f"{m}.") if m else True for m in modules)


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A conv weight (O, I, kh, kw) for `in_chans` inputs, as timm's adapt_input_conv: summed over groups of input
    channels when there are fewer (RGB -> grey: the sum), repeated and rescaled when there are more."""
    dtype, w = weight.dtype, weight.float()
    o, i = w.shape[:2]
    if i % in_chans == 0:
        w = w.reshape(o, in_chans, i // in_chans, *w.shape[2:]).sum(2)
    else:
        w = w.repeat(1, math.ceil(in_chans / i), 1, 1)[:, :in_chans] * (i / in_chans)
    return w.to(dtype)


# -- loading -------------------------------------------------------------------------------------------------------

def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _differs_only_in(a: torch.Tensor, b: torch.Tensor, dim: int) -> bool:
    return a.dim() == b.dim() > dim and all(a.shape[d] == b.shape[d] for d in range(a.dim()) if d != dim)


def _is_pruned(path: Path) -> bool:
    """Whether `path` holds slimkit-pruned weights (a record beside it, or inside the safetensors metadata)."""
    if path.with_name(path.name.removesuffix(".safetensors") + ".prune.json").is_file():
        return True
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return "slimkit_pruning" in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - not a safetensors file
        return False


def _mismatch_error(path: Path, model: nn.Module, missing: list[str], unexpected: list[str], bad: list[str],
                    file_keys: int, matched: int, head_note: str) -> CheckpointError:
    parts = [f"different shapes: {'; '.join(bad[:3])}"] if bad else []
    parts += [f"missing from the file {len(missing)}: {', '.join(missing[:3])}"] if missing else []
    parts += [f"not in the model {len(unexpected)}: {', '.join(unexpected[:3])}"] if unexpected else []
    own = len(model.state_dict())
    if _is_pruned(path):
        hint = ("It is a pruned model (it carries its pruning record): reload it with slimkit.load(path), or pass "
                "the compress run folder as --baseline")
    elif head_note:
        hint = head_note
    elif matched < own // 2:
        hint = (f"Was it saved from another architecture? The file holds {file_keys} tensors, the model {own}, "
                f"{matched} of them match by name. Check the model name: timm and torchvision name layers "
                "differently (timm weights go into timm:<name>, torchvision weights into torchvision:<name>)")
    elif bad:
        hint = ("The same layers with other widths: a pruned model (reload it with slimkit.load and its .prune.json "
                "record) or another variant / width of this architecture (check the model name and --model-arg)")
    else:
        hint = "Was it saved from another variant or version of this architecture? Check the model name"
    return CheckpointError(f"{path} does not fit {type(model).__name__} ({'; '.join(parts)}). {hint}")


def _check_values(path: Path, own: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor],
                  loaded: list[str]) -> None:
    """Tensors that would load into a broken model are refused: NaN / infinite values (a diverged run), and integer
    or boolean values for a floating-point tensor (load_state_dict would cast them silently)."""
    kinds = [f"{k} ({new[k].dtype} for a {own[k].dtype} tensor)" for k in loaded
             if own[k].is_floating_point() and not new[k].is_floating_point()]
    if kinds:
        raise CheckpointError(f"{path} holds integer values where the model has floating-point weights: "
                              f"{', '.join(kinds[:3])}{' ...' if len(kinds) > 3 else ''}. Save the model's own "
                              "state dict (its tensors keep their dtype)")
    broken = [k for k in loaded if new[k].is_floating_point() and not bool(torch.isfinite(new[k]).all())]
    if broken:
        raise CheckpointError(f"{path} holds NaN or infinite values in {len(broken)} tensor(s) "
                              f"({', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}): the model they make is "
                              "broken (did its training diverge?); use a checkpoint from before")


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = False, ema: bool = False) -> LoadReport:
    """Load the weights in `path` into `model` (in place) and report what was loaded, replaced and adapted.

    Reads `.safetensors`, or a PyTorch file (`.pt/.pth/.bin/.ckpt`) with `torch.load(weights_only=True)`: a pickle
    carrying code is refused. Understands bare state dicts, `{"state_dict": ...}`, `{"model": ...}`,
    `{"model_state_dict": ...}`, EMA copies (`ema=True` prefers them), `module.` / `model.` / `_orig_mod.` prefixes,
    torchvision state dicts in `torchvision:<name>` and original checkpoints timm converts. Unless `strict`, a
    classifier of another class count is left freshly initialised (transfer learning: train it) and a first
    convolution of another input-channel count is adapted; both are in the report. Anything else that does not fit
    raises a CheckpointError naming the keys.
    """
    path = Path(path)
    sd, info = read_state_dict(path, ema=ema)
    own = model.state_dict()
    removed, added, mapped = _best_layout(sd, set(own))
    converted = None
    problems = set(own) ^ set(mapped) | {k for k in own if k in mapped and own[k].shape != mapped[k].shape}
    if problems:
        filtered = _timm_filter(model, mapped)
        if filtered is not None:
            f_problems = set(own) ^ set(filtered) | {k for k in own if k in filtered
                                                     and own[k].shape != filtered[k].shape}
            if len(f_problems) < len(problems):
                mapped, converted = filtered, "timm's checkpoint_filter_fn"
    heads, inputs = _head_modules(model), _input_convs(model)
    new = OrderedDict(own)
    new._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]  # versions some modules check
    loaded, replaced, adapted, bad, file_classes = [], [], [], [], None
    for k, v in mapped.items():
        if k not in own:
            continue
        mine = own[k]
        if mine.shape == v.shape:
            new[k] = v
            loaded.append(k)
        elif not strict and _owner(k, heads) and _differs_only_in(v, mine, 0):
            replaced.append(k)
            file_classes = v.shape[0]
        elif not strict and k in inputs and _differs_only_in(v, mine, 1) and v.dim() == 4:
            new[k] = adapt_input_conv(v, mine.shape[1])
            adapted.append(f"{k} ({v.shape[1]} -> {mine.shape[1]} channels)")
        else:
            bad.append(f"{k}: file {_shape(v)} vs model {_shape(mine)}")
    tracked = "num_batches_tracked"  # absent from older checkpoints; the model's own count is kept
    missing = [k for k in own if k not in mapped and not k.endswith(tracked)]
    unexpected = [k for k in mapped if k not in own and not k.endswith(tracked)]
    head_missing = [k for k in missing if _owner(k, heads)]
    if not strict and head_missing and len(head_missing) == len(missing) and not any(_owner(k, heads) for k in mapped):
        replaced += head_missing  # a backbone-only file (no classifier at all): the head stays freshly initialised
        missing = []
    head_note = ""
    if strict and any(_owner(k.split(":")[0], heads) for k in bad):
        head_note = ("Its classifier predicts another number of classes than the model: build the model with the "
                     "file's class count, or load without strict to replace the head (transfer learning)")
    if bad or missing or unexpected:
        named = len(set(own) & set(mapped))
        raise _mismatch_error(path, model, missing, unexpected, bad, len(sd), named, head_note)
    _check_values(path, own, new, loaded)
    model.load_state_dict(new, strict=True)
    classes = getattr(model, "num_classes", None)
    if replaced and classes is None:
        classes = next((own[k].shape[0] for k in replaced if k.endswith("weight")), None)
    return LoadReport(path=str(path), format=info["format"], container=info["container"], removed_prefix=removed,
                      added_prefix=added, converted=converted, loaded=tuple(loaded), replaced=tuple(replaced),
                      adapted=tuple(adapted), file_classes=file_classes, model_classes=classes if replaced else None,
                      notes=tuple(info["notes"]))
