"""Performance predictors for model-based search: scikit-learn regressors behind one small interface.

`create_predictor(name, seed=..., **kw)` returns an object with `fit(X, y)` and `predict(X) -> (mean, std)`.
Targets are standardised inside (`target="rank"` first maps them to normal scores of their ranks, so a few
broken architectures do not dominate the fit; predictions are then in those units, as is `y_best`). `std` is
the spread of an ensemble (members differ in seed and bootstrap sample), the posterior std of a GP, or zeros for
a single deterministic model. Registered: mlp, rf, gbdt, gp, ridge.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning

from slimkit.errors import ConfigError
from slimkit.registry import PREDICTORS

__all__ = ["Predictor", "create_predictor", "list_predictors", "normal_scores"]


def normal_scores(values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Normal scores of the (average) ranks of `values` within `reference` (default: themselves), column-wise:
    `norm.ppf((rank - 0.5) / n)`, so any monotone feature or target becomes roughly standard normal and outliers
    stop dominating. NaN counts as below every number (a proxy that failed is the worst), +-inf as the extremes."""
    v = np.asarray(values, np.float64)
    ref = v if reference is None else np.asarray(reference, np.float64)
    if v.ndim == 1:
        return normal_scores(v[:, None], ref.reshape(len(ref), -1))[:, 0]
    if ref.ndim != 2 or ref.shape[1] != v.shape[1] or not len(ref):
        raise ConfigError(f"reference must be a non-empty (n, {v.shape[1]}) array, got shape {ref.shape}")
    v, ref = np.where(np.isnan(v), -np.inf, v), np.sort(np.where(np.isnan(ref), -np.inf, ref), axis=0)
    out = np.empty_like(v)
    for j in range(v.shape[1]):  # average rank within the reference, 1-based (ties share the mean of their ranks)
        lo, hi = np.searchsorted(ref[:, j], v[:, j], "left"), np.searchsorted(ref[:, j], v[:, j], "right")
        rank = np.clip((lo + hi + 1) / 2, 1, len(ref))
        out[:, j] = norm.ppf((rank - 0.5) / len(ref))
    return out


class Predictor:
    """One regressor (or an ensemble of `ensemble` regressors) fitted on standardised targets."""

    def __init__(self, factory: Any, seed: int = 0, ensemble: int = 1, bootstrap: bool | None = None,
                 has_std: bool = False, target: str = "standard") -> None:
        if ensemble < 1:
            raise ConfigError(f"ensemble size must be >= 1, got {ensemble}")
        if target not in ("standard", "rank"):
            raise ConfigError(f"target transform must be 'standard' or 'rank', got {target!r}")
        self.factory, self.seed, self.ensemble, self.has_std, self.target = factory, seed, ensemble, has_std, target
        self.bootstrap = ensemble > 1 if bootstrap is None else bootstrap
        self.models: list[Any] = []

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if len(x) != len(y) or len(x) < 2:
            raise ConfigError(f"a predictor needs at least 2 (x, y) pairs of equal count, got {len(x)} and {len(y)}")
        if self.target == "rank":  # normal scores of the ranks: outliers (broken cells) stop dominating the fit
            y = normal_scores(y)
        self.y_best = float(y.max())  # the best target in the units predict() returns
        self._mu, self._sd = float(y.mean()), float(y.std()) or 1.0
        z = (y - self._mu) / self._sd
        rng = np.random.default_rng(self.seed)
        self.models = []
        with warnings.catch_warnings():  # small data: MLPs stop at max_iter, GP noise hits its bound; both are fine
            warnings.simplefilter("ignore", ConvergenceWarning)
            for m in range(self.ensemble):
                idx = rng.integers(0, len(x), len(x)) if self.bootstrap else np.arange(len(x))
                self.models.append(self.factory(int(rng.integers(2**31 - 1)) + m).fit(x[idx], z[idx]))
        return self

    def predict_members(self, x: np.ndarray) -> np.ndarray:
        """Each ensemble member's prediction (members x points), in the units of `predict`."""
        if not self.models:
            raise ConfigError("predict() called before fit()")
        x = np.asarray(x, np.float64)
        return np.stack([m.predict(x) for m in self.models]) * self._sd + self._mu

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.models:
            raise ConfigError("predict() called before fit()")
        x = np.asarray(x, np.float64)
        if self.has_std and self.ensemble == 1:
            mean, std = self.models[0].predict(x, return_std=True)
        else:
            preds = np.stack([m.predict(x) for m in self.models])
            mean, std = preds.mean(0), preds.std(0)
        return mean * self._sd + self._mu, std * self._sd


def _mlp(hidden: tuple[int, ...] = (128, 128), max_iter: int = 500, alpha: float = 1e-3, lr: float = 1e-3) -> Any:
    from sklearn.neural_network import MLPRegressor

    return lambda seed: MLPRegressor(hidden_layer_sizes=hidden, alpha=alpha, learning_rate_init=lr, max_iter=max_iter,
                                     early_stopping=False, random_state=seed)


def _rf(n_estimators: int = 100, max_features: float | str = 0.5) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return lambda seed: RandomForestRegressor(n_estimators=n_estimators, max_features=max_features, random_state=seed)


def _gbdt(n_estimators: int = 200, learning_rate: float = 0.05, max_depth: int = 3) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return lambda seed: GradientBoostingRegressor(n_estimators=n_estimators, learning_rate=learning_rate,
                                                  max_depth=max_depth, subsample=0.8, random_state=seed)


def _gp() -> Any:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    def make(seed: int) -> Any:
        kernel = ConstantKernel(1.0) * Matern(length_scale=2.0, nu=2.5) + WhiteKernel(0.1)
        return GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed, n_restarts_optimizer=0)
    return make


def _ridge(alpha: float = 1.0) -> Any:
    from sklearn.linear_model import Ridge

    return lambda seed: Ridge(alpha=alpha)


for _name, _factory, _std in (("mlp", _mlp, False), ("rf", _rf, False), ("gbdt", _gbdt, False), ("gp", _gp, True),
                              ("ridge", _ridge, False)):
    PREDICTORS.register(_name, has_std=_std)(_factory)


def create_predictor(name: str = "mlp", seed: int = 0, ensemble: int = 1, bootstrap: bool | None = None,
                     target: str = "standard", **kwargs: Any) -> Predictor:
    """`create_predictor("mlp", ensemble=5, hidden=(64, 64))`: a fit/predict object; kwargs go to the regressor."""
    factory = PREDICTORS.get(name)
    try:
        make = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad options for predictor {name!r}: {e}") from None
    return Predictor(make, seed=seed, ensemble=ensemble, bootstrap=bootstrap, has_std=PREDICTORS.meta(name)["has_std"],
                     target=target)


def list_predictors(pattern: str = "*") -> list[str]:
    return PREDICTORS.list(pattern)
