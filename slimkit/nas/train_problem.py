"""Searching by training: each candidate is built from the space, trained briefly on real data and scored.

    problem = TrainProblem(NB201Space(), data="fashion-mnist", limit=3000, epochs=2,
                           build_kwargs={"channels": 8, "cells_per_stage": 1})
    search(problem, "weaknas", queries=30, constraints=["macs_M <= 20"])

`evaluate` returns val_acc (the default objective), test_acc and the training time; `costs` returns params_M,
macs_M and (with `latency=True`) the measured CPU latency in ms, all computed without training; `features` adds
training-free proxy scores (`slimkit.nas.proxies`, e.g. naswot) for the model-based strategies' `features=`. The
data is loaded lazily in whichever process evaluates (the problem pickles without it, for process and Ray
executors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.data import DataSplits, create_dataset, make_loaders
from slimkit.errors import ConfigError
from slimkit.nas.proxies import compute_proxy, list_proxies
from slimkit.nas.spaces.base import SearchSpace
from slimkit.profile import count_macs, count_params, measure_latency
from slimkit.train import TrainConfig, Trainer, evaluate, seeded

__all__ = ["TrainProblem"]


@dataclass
class TrainProblem:
    space: SearchSpace
    data: str = "fashion-mnist"   # dataset name, .npz file or image folder
    data_root: str | None = None
    limit: int | None = 3000       # class-balanced training subset (None: all)
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.05
    seed: int = 0
    metric: str = "val_acc"
    build_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to space.build (width, depth, ...)
    latency: bool = False          # also measure CPU latency (batch 1, torch) as a cost
    proxy_images: int = 64         # training images that training-free proxies (features=["naswot"]) score on
    _splits: DataSplits | None = field(default=None, init=False, repr=False)
    _costs: dict[str, dict[str, float]] = field(default_factory=dict, init=False, repr=False)
    _proxies: dict[tuple[str, str], float] = field(default_factory=dict, init=False, repr=False)
    _proxy_x: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.metric not in ("val_acc", "test_acc"):
            raise ConfigError(f"TrainProblem metric must be val_acc or test_acc, got {self.metric!r}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_splits"] = state["_proxy_x"] = None  # workers load the data themselves
        return state

    @property
    def splits(self) -> DataSplits:
        if self._splits is None:
            self._splits = create_dataset(self.data, self.data_root, seed=self.seed, limit=self.limit,
                                          val_fraction=0.2, augment=False)
        return self._splits

    def build(self, arch: Any) -> nn.Module:
        info = self.splits.info
        return self.space.build(arch, num_classes=info.num_classes, in_chans=info.in_chans, **self.build_kwargs)

    def costs(self, arch: Any) -> dict[str, float]:
        key = self.space.key(arch)
        if key not in self._costs:
            model = self.build(arch).eval()
            shape = (self.splits.info.in_chans, *self.splits.info.image_size)
            costs = {"params_M": count_params(model) / 1e6, "macs_M": count_macs(model, shape) / 1e6}
            if self.latency:
                costs["latency_ms"] = measure_latency(model, shape, repeats=10, min_time_s=0.1).median_ms
            self._costs[key] = costs
        return dict(self._costs[key])

    def features(self, archs: Sequence[Any], names: Sequence[str]) -> np.ndarray:
        """Training-free predictor inputs (`features=` of WeakNAS / BO), n x len(names): any cost (params_M,
        macs_M, latency_ms) or a `slimkit.nas.proxies` score (e.g. naswot) of the untrained network on the first
        `proxy_images` training images, with weights initialised from `seed` (so a score is reproducible)."""
        proxies = set(list_proxies())
        cost_names = {"params_M", "macs_M"} | ({"latency_ms"} if self.latency else set())
        bad = [n for n in names if n not in proxies | cost_names]
        if bad:
            raise ConfigError(f"unknown features {bad} for a training search; choose costs {sorted(cost_names)} or "
                              f"proxies {sorted(proxies)}")
        out = np.empty((len(archs), len(names)))
        for i, arch in enumerate(archs):
            key = self.space.key(arch)
            for j, name in enumerate(names):
                if name in cost_names:
                    out[i, j] = self.costs(arch)[name]
                    continue
                if (key, name) not in self._proxies:
                    with seeded(self.seed):
                        model = self.build(arch)
                    self._proxies[(key, name)] = compute_proxy(name, model, self._proxy_batch())
                out[i, j] = self._proxies[(key, name)]
        return out

    def _proxy_batch(self) -> torch.Tensor:
        if self._proxy_x is None:
            train = self.splits.train
            n = min(self.proxy_images, len(train))  # type: ignore[arg-type]
            self._proxy_x = torch.stack([train[i][0] for i in range(n)])
        return self._proxy_x

    def evaluate(self, arch: Any) -> dict[str, float]:
        with seeded(self.seed):  # a candidate's score depends on its architecture and the seed only
            model = self.build(arch)
        loaders = make_loaders(self.splits, self.batch_size, seed=self.seed)
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                          progress=False, warmup_epochs=0.0)
        result = Trainer(model, cfg, loaders.train).fit()
        val, test = evaluate(model, loaders.val), evaluate(model, loaders.test)
        return {"val_acc": val["acc"], "test_acc": test["acc"], "train_time_s": result.wall_time_s}
