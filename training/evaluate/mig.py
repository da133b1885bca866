"""Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

MIG = mean over factors v_k of (I(z_a; v_k) - I(z_b; v_k)) / H(v_k), where z_a and z_b are the
two latent dimensions with the most information about v_k. Estimated as disentanglement_lib
(Locatello et al. 2019) does: posterior means and factors discretized into 20 equal-width bins,
discrete mutual information and entropy from scikit-learn. 1 means every factor lives in one
latent dimension alone; 0 means none does.
"""
from __future__ import annotations

import numpy as np

from latentforge.errors import InputError

BINS = 20


def discretize(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each column of [N, d] into `bins` equal-width bins over its own range -> int [N, d]."""
    out = np.zeros(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        column = values[:, j]
        edges = np.histogram_bin_edges(column, bins)
        out[:, j] = np.digitize(column, edges[1:-1])
    return out


def mig(codes: np.ndarray, factors: np.ndarray, names: list[str] | None = None) -> dict:
    """MIG of latent codes [N, d] (posterior means) against ground-truth factors [N, k].

    Returns {"mig": float, "per_factor": {name: gap / entropy}, "top_dim": {name: dim}}; factors
    that take one value carry no information and are left out.
    """
    from sklearn.metrics import mutual_info_score

    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors, dtype=np.float64)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise InputError(f"codes [N, d] and factors [N, k] must have the same N >= 2, "
                         f"got {list(codes.shape)} and {list(factors.shape)}")
    if codes.shape[1] < 2:
        raise InputError("MIG needs at least 2 latent dimensions (it is a gap between the top two)")
    names = names or [f"factor{i}" for i in range(factors.shape[1])]
    z, v = discretize(codes), discretize(factors)
    per_factor, top_dim = {}, {}
    for k, name in enumerate(names):
        entropy = mutual_info_score(v[:, k], v[:, k])
        if entropy <= 0:
            continue
        info = np.array([mutual_info_score(z[:, j], v[:, k]) for j in range(z.shape[1])])
        second, first = np.sort(info)[-2:]
        per_factor[name] = float((first - second) / entropy)
        top_dim[name] = int(np.argmax(info))
    if not per_factor:
        raise InputError("every factor takes a single value; MIG is undefined")
    return {"mig": float(np.mean(list(per_factor.values()))), "per_factor": per_factor, "top_dim": top_dim}
