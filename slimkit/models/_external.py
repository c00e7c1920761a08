"""`timm:<name>` and `torchvision:<name>` models, built offline (random init, never a weight download)."""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError, MissingDependencyError, ModelError, UnknownNameError

__all__ = ["create_external", "external_data_config", "list_external"]


def _import(lib: str) -> Any:
    try:
        return __import__(lib)
    except ImportError:
        raise MissingDependencyError(f'{lib} models need the timm extra: pip install "slimkit[timm]"') from None


def list_external(lib: str, pattern: str = "*") -> list[str]:
    if lib == "timm":
        return list(_import("timm").list_models(pattern))
    if lib == "torchvision":
        import fnmatch

        tv = _import("torchvision")
        return sorted(n for n in tv.models.list_models(module=tv.models) if fnmatch.fnmatch(n, pattern))
    raise ConfigError(f"unknown model library {lib!r}: use 'timm:<name>' or 'torchvision:<name>'")


def _unknown(lib: str, name: str) -> UnknownNameError:
    close = difflib.get_close_matches(name, list_external(lib), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownNameError(f"unknown {lib} model {name!r}.{hint} List them with `slimkit models --external {lib}`")


class _TorchvisionAdapter(nn.Module):
    """Give a torchvision classifier the slimkit interface where its structure allows (features + classifier)."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model, self.num_classes = model, num_classes
        head = self.get_classifier()
        self.num_features = getattr(head, "in_features", 0)

    def get_classifier(self) -> nn.Module:
        for attr in ("fc", "classifier", "heads", "head"):
            m = getattr(self.model, attr, None)
            if m is not None:
                while isinstance(m, nn.Sequential):
                    m = m[-1]
                return m
        raise ModelError(f"{type(self.model).__name__} has no recognisable classifier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _replace_first_conv(model: nn.Module, in_chans: int) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            new = nn.Conv2d(in_chans, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                            m.bias is not None)
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], new)
            return


# builder arguments that read files (timm's checkpoint_path goes to torch.load, i.e. unpickling) or fetch weights:
# never passed through, whatever a config, model.json or pruning record says
_LOADING_KWARGS = {"timm": ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir",
                            "pretrained_strict"),
                   "torchvision": ("weights", "weights_backbone", "progress")}


def create_external(spec: str, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    lib, _, name = spec.partition(":")
    if kwargs.pop("pretrained", False):
        raise ConfigError(
            f"{spec}: slimkit never downloads weights. Build it without pretrained and load your own weights "
            "instead (--weights PATH, or slimkit.load_weights(model, path))"
        )
    loading = sorted(k for k in kwargs if k in _LOADING_KWARGS.get(lib, ()))
    if loading:
        raise ConfigError(f"{spec}: model argument(s) {loading} would load weights through the library (a pickle "
                          "for timm's checkpoint_path); slimkit builds models with random weights and loads "
                          "weights itself: drop them and pass --weights PATH (slimkit.load_weights(model, path))")
    if lib == "timm":
        timm = _import("timm")
        if not timm.is_model(name):
            raise _unknown(lib, name)
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if lib == "torchvision":
        tv = _import("torchvision")
        if name not in list_external("torchvision"):
            raise _unknown(lib, name)
        model = tv.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        if in_chans != 3:
            _replace_first_conv(model, in_chans)
        return _TorchvisionAdapter(model, num_classes)
    raise ConfigError(f"unknown model library {lib!r} in {spec!r}: use 'timm:<name>' or 'torchvision:<name>'")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def external_data_config(spec: str) -> dict[str, Any] | None:
    """The input preprocessing a timm / torchvision model was trained with (read offline, no download): mean, std
    (0..1 scale, RGB), crop_pct, interpolation, input_size. None for an unknown library or model."""
    lib, _, name = spec.partition(":")
    if lib == "timm":
        cfg = _import("timm").models.get_pretrained_cfg(name)
        if cfg is None:
            return None
        return {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "crop_pct": float(cfg.crop_pct),
                "interpolation": cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bilinear",
                "input_size": tuple(cfg.input_size), "source": f"timm pretrained_cfg of {name}"}
    if lib == "torchvision":
        tv = _import("torchvision")
        try:
            t = tv.models.get_model_weights(name).DEFAULT.transforms()
        except (ValueError, KeyError, AttributeError):  # no published weights: ImageNet's defaults
            return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.875, "interpolation": "bilinear",
                    "input_size": (3, 224, 224), "source": "ImageNet (torchvision default)"}
        crop, resize = t.crop_size[0], t.resize_size[0]
        return {"mean": tuple(t.mean), "std": tuple(t.std), "crop_pct": crop / resize,
                "interpolation": t.interpolation.value, "input_size": (3, crop, crop),
                "source": f"torchvision {name} weights' transforms"}
    return None
