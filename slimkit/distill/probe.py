"""Linear probe: how good are a frozen backbone's features? Extract pooled embeddings, fit scikit-learn's
logistic regression on the training set, report test accuracy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import DistillError

__all__ = ["extract_features", "linear_probe"]


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) over a loader; features are forward_head(forward_features(x), pre_logits=True) or the
    backbone's `embed(x)` when it has one."""
    backbone.eval()
    embed = getattr(backbone, "embed", None) or (
        lambda x: backbone.forward_head(backbone.forward_features(x), pre_logits=True))
    feats, labels = [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        feats.append(embed(x).flatten(1).float().cpu().numpy())
        labels.append(np.asarray(y))
    if not feats:
        raise DistillError("linear probe: the loader yielded no batches")
    return np.concatenate(feats), np.concatenate(labels)


def linear_probe(backbone: nn.Module, train_loader: Iterable[Any], test_loader: Iterable[Any], c: float = 1.0,
                 max_iter: int = 1000) -> float:
    """Test accuracy of a logistic regression on the frozen backbone's standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = extract_features(backbone, train_loader)
    xte, yte = extract_features(backbone, test_loader)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    clf.fit(xtr, ytr)
    return float(clf.score(xte, yte))
