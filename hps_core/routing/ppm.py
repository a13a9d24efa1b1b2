"""The performance prediction model (PPM): a mix's tag-count vector -> its reward model's gold accuracy.

HyPER fits a quadratic regression (linear terms plus every pairwise product and square of the counts) on
a few hundred mixes whose reward models were actually trained and scored. With T tags that is
T + T(T+1)/2 coefficients, more than there are mixes, so the fit is ridge-penalised: counts are
standardised (the penalty then treats every tag alike), the penalty is chosen from ``alphas`` by
scikit-learn's efficient leave-one-out (``RidgeCV``), and the model is stored in its own closed form

    f(c) = b + w . z + z^T Q z,   z = (c - mean) / scale

as plain JSON (no pickle), from which :meth:`QuadraticPPM.raw_form` gives the same function in count
units and :meth:`QuadraticPPM.gains` the predicted gain of routing one more instance to humans.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMA = "hyper-ppm/1"


def quadratic_features(z: np.ndarray) -> np.ndarray:
    """[z_1..z_T, z_i * z_j for i <= j] per row (the order :meth:`QuadraticPPM` unpacks)."""
    z = np.atleast_2d(np.asarray(z, float))
    i, j = np.triu_indices(z.shape[1])
    return np.hstack([z, z[:, i] * z[:, j]])


@dataclass(frozen=True)
class QuadraticPPM:
    tag_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    intercept: float
    linear: np.ndarray  # (T,)
    quad: np.ndarray  # (T, T), symmetric
    alpha: float = 0.0
    n_train: int = 0
    n_instances: int = 0  # size of the dataset the mixes were drawn from (counts are on its scale)

    def _z(self, counts: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(counts, float)) - self.mean) / self.scale

    def predict(self, counts: np.ndarray) -> np.ndarray:
        z = self._z(counts)
        return self.intercept + z @ self.linear + np.einsum("ni,ij,nj->n", z, self.quad, z)

    def raw_form(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(b0, w0, Q0) with f(c) = b0 + w0 . c + c^T Q0 c, in count units."""
        d = 1.0 / self.scale
        q0 = self.quad * np.outer(d, d)
        dw = d * self.linear
        w0 = dw - 2.0 * q0 @ self.mean
        b0 = self.intercept - dw @ self.mean + self.mean @ q0 @ self.mean
        return float(b0), w0, q0

    def gains(self, tags: np.ndarray, base_counts: np.ndarray | None = None) -> np.ndarray:
        """f(base + x_i) - f(base) for every instance i with tag vector x_i: the predicted change of the
        score when instance i alone moves from the AI label to the human label (base: all-AI, 0)."""
        x = np.asarray(tags, float)
        c = np.zeros(x.shape[1]) if base_counts is None else np.asarray(base_counts, float)
        _, w0, q0 = self.raw_form()
        return x @ w0 + 2.0 * x @ (q0 @ c) + np.einsum("ni,ij,nj->n", x, q0, x)

    def tag_gains(self, base_counts: np.ndarray | None = None) -> dict[str, float]:
        """Predicted gain of one more human label on an instance carrying only tag t, per tag."""
        return dict(zip(self.tag_names, self.gains(np.eye(len(self.tag_names)), base_counts).tolist()))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "tag_names": list(self.tag_names), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "intercept": self.intercept, "linear": self.linear.tolist(),
                "quad": self.quad.tolist(), "alpha": self.alpha, "n_train": self.n_train,
                "n_instances": self.n_instances}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuadraticPPM":
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} PPM (schema {d.get('schema')!r})")
        arr = lambda k: np.asarray(d[k], float)  # noqa: E731
        return cls(list(d["tag_names"]), arr("mean"), arr("scale"), float(d["intercept"]), arr("linear"),
                   arr("quad"), float(d["alpha"]), int(d["n_train"]), int(d.get("n_instances", 0)))

    def digest(self) -> str:
        """sha256 of the canonical JSON: the PPM's content version."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fit_ppm(counts: np.ndarray, scores: np.ndarray, tag_names: list[str], alphas: list[float],
            n_instances: int = 0) -> QuadraticPPM:
    """Ridge regression of ``scores`` on the quadratic features of standardised ``counts``."""
    from sklearn.linear_model import RidgeCV

    counts, scores = np.asarray(counts, float), np.asarray(scores, float)
    mean = counts.mean(axis=0)
    scale = counts.std(axis=0)
    scale[scale == 0] = 1.0  # a tag no mix varies on contributes nothing (its z is 0)
    z = (counts - mean) / scale
    model = RidgeCV(alphas=list(alphas), fit_intercept=True).fit(quadratic_features(z), scores)
    t = counts.shape[1]
    linear, pair = model.coef_[:t], model.coef_[t:]
    quad = np.zeros((t, t))
    i, j = np.triu_indices(t)
    quad[i, j] = np.where(i == j, pair, pair / 2.0)  # z_i z_j (i < j) splits over Q_ij and Q_ji
    quad = np.triu(quad) + np.triu(quad, 1).T
    return QuadraticPPM(list(tag_names), mean, scale, float(model.intercept_), linear, quad,
                        float(model.alpha_), len(scores), n_instances)


def cross_validate(counts: np.ndarray, scores: np.ndarray, tag_names: list[str], alphas: list[float],
                   folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Out-of-fold predictions (the penalty re-chosen inside every fold), their Spearman correlation with
    the actual scores and their RMSE."""
    from scipy.stats import spearmanr
    from sklearn.model_selection import KFold

    counts, scores = np.asarray(counts, float), np.asarray(scores, float)
    predicted = np.empty_like(scores)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(counts):
        predicted[test] = fit_ppm(counts[train], scores[train], tag_names, alphas).predict(counts[test])
    rho = spearmanr(predicted, scores).statistic if np.ptp(predicted) > 0 and np.ptp(scores) > 0 else float("nan")
    return {"spearman": float(rho), "rmse": float(np.sqrt(np.mean((predicted - scores) ** 2))),
            "predicted": predicted}
