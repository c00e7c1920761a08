"""Bayesian optimisation: a scikit-learn Gaussian process on architecture encodings, expected improvement over the
unseen candidates (the whole space when it can be listed, else a random pool plus mutations of the best).

`ModelBased` is the machinery BO and WeakNAS share. `features=[...]` appends training-free numbers the problem
provides (`problem.features(archs, names)`: a table's params / FLOPs / latency / NASWOT columns, or costs and
`slimkit.nas.proxies` scores computed by a TrainProblem) to the encoding, each as the normal score of its rank; the
features are computed for every candidate ranked, so keep `pool` small when they are expensive. `warm_start=K`
draws the initial architectures from the K best by the features instead of uniformly (zero-cost warm-up,
Abdelfattah et al., ICLR 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from slimkit.errors import ConfigError
from slimkit.nas.predictors import create_predictor, normal_scores
from slimkit.nas.strategies.acquisition import acquire
from slimkit.nas.strategies.base import Strategy
from slimkit.registry import STRATEGIES

__all__ = ["BayesOpt", "ModelBased"]


class ModelBased(Strategy):
    """Shared machinery: encode trials, fit a predictor, score a candidate pool."""

    uses_features = True  # as predictor inputs, not only for the warm start

    def __init__(self, space: Any, seed: int = 0, feasible: Any = None, init: int = 10, batch: int = 10,
                 encoding: str = "onehot", predictor: str = "mlp", ensemble: int = 1, pool: int = 20000,
                 predictor_kwargs: dict[str, Any] | None = None, target: str = "standard",
                 features: Sequence[str] = (), warm_start: int = 0) -> None:
        super().__init__(space, seed, feasible, features, warm_start)
        self.target = target
        if init < 2 or batch < 1:
            raise ConfigError(f"need init >= 2 and batch >= 1, got init={init}, batch={batch}")
        if encoding not in space.encodings:
            raise ConfigError(f"space {space.name!r} has no {encoding!r} encoding; choose one of "
                              f"{list(space.encodings)}")
        self.init, self.batch, self.encoding, self.pool_size = init, batch, encoding, pool
        self.predictor_name, self.ensemble, self.predictor_kwargs = predictor, ensemble, predictor_kwargs or {}
        self._reference: np.ndarray | None = None      # this iteration's feature values, that ranks are taken in

    # -- encoding: the space's encoding plus training-free features ---------------------------------------------------
    def encode(self, archs: Sequence[Any], raw: np.ndarray | None = None) -> np.ndarray:
        """Predictor inputs: the space's encoding, then each feature (`raw`: their values, when already at hand) as
        the normal score of its rank among this iteration's evaluated and candidate architectures (so scale and
        outliers do not matter)."""
        x = self.space.encode_many(list(archs), self.encoding)
        if not self.features:
            return x
        assert self._reference is not None, "encode() with features before an iteration set the reference"
        raw = self.raw_features(archs) if raw is None else raw
        return np.concatenate([x, normal_scores(raw, self._reference)], 1)

    def fit(self, x: np.ndarray) -> Any:
        """A predictor fitted on the evaluated architectures (`x`: their encodings, in `ok_trials` order)."""
        y = np.array([t.score for t in self.ok_trials], np.float64)
        seed = int(self.rng.integers(2**31 - 1))
        return create_predictor(self.predictor_name, seed=seed, ensemble=self.ensemble, target=self.target,
                                **self.predictor_kwargs).fit(x, y)

    def pool(self) -> list[Any]:
        """Candidates to score: every unseen architecture of a listed space (or a random `pool` of them), else `pool`
        random samples; plus the unseen neighbours of the ten best so far. Rankings keep the feasible ones
        (`first_feasible`)."""
        cands = self.candidate_pool(self.pool_size, checked=False)  # checked lazily on the ranking
        if len(cands) > self.pool_size:
            cands = [cands[i] for i in np.sort(self.rng.choice(len(cands), self.pool_size, replace=False))]
        keys = {self.space.key(a) for a in cands}
        for t in sorted(self.ok_trials, key=lambda t: -t.score)[:10]:  # type: ignore[operator]
            for a in self.space.neighbours(self.space.from_key(t.key)):
                k = self.space.key(a)
                if k not in keys and k not in self.seen:
                    cands.append(a)
                    keys.add(k)
        return cands

    def _propose(self) -> list[Any]:
        ok = self.ok_trials
        if len(ok) < self.init:
            return self.initial(self.init - len(ok))
        cands = self.pool()
        if not cands:
            return []
        archs = [self.space.from_key(t.key) for t in ok] + cands
        if self.features:
            self._reference = self.raw_features(archs)
        x = self.encode(archs, self._reference)
        model = self.fit(x[:len(ok)])
        mean, std = model.predict(x[len(ok):])
        return self._choose(cands, model, mean, std)

    def _choose(self, cands: list[Any], model: Any, mean: np.ndarray, std: np.ndarray) -> list[Any]:
        """The next batch from the scored candidates."""
        raise NotImplementedError


@STRATEGIES.register("bo")
class BayesOpt(ModelBased):
    name = "bo"

    def __init__(self, space: Any, seed: int = 0, feasible: Any = None, init: int = 10, batch: int = 1,
                 encoding: str = "onehot", predictor: str = "gp", ensemble: int = 1, acquisition: str = "ei",
                 pool: int = 20000, features: Sequence[str] = (), warm_start: int = 0) -> None:
        super().__init__(space, seed, feasible, init, batch, encoding, predictor, ensemble, pool, features=features,
                         warm_start=warm_start)
        self.acquisition = acquisition

    def _choose(self, cands: list[Any], model: Any, mean: np.ndarray, std: np.ndarray) -> list[Any]:
        score = acquire(self.acquisition, mean, std, model.y_best)
        return [cands[i] for i in self.first_feasible(cands, np.argsort(-score, kind="stable"), self.batch)]
