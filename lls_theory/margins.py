"""DPO margins and the DPO loss (paper §1).

ρ_{M,s}(p, r+, r−) = (log Pr_M[r+|s,p] − log Pr_M[r−|s,p]) − (log Pr_ref[r+|p] − log Pr_ref[r−|p])

DPO loss per pair: ℓ(ρ) = −log σ(β ρ); the dataset loss is the mean over pairs.
All functions accept array-likes of shape (n,) (or any common broadcastable shape) and
return numpy arrays; nothing here depends on torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["log_sigmoid", "sigmoid", "margin", "dpo_loss", "dpo_loss_grad"]


def _finite_array(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim and not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a.ravel()))[0])
        raise ValueError(f"{name}: non-finite value at index {bad}")
    if a.ndim == 0 and not np.isfinite(a):
        raise ValueError(f"{name}: non-finite value")
    return a


def log_sigmoid(x) -> np.ndarray:
    """Numerically stable log σ(x) = −log(1 + e^{−x}) = min(x, 0) − log1p(e^{−|x|})."""
    x = np.asarray(x, dtype=float)
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def sigmoid(x) -> np.ndarray:
    """σ(x) = 1 / (1 + e^{−x}), computed without overflow."""
    x = np.asarray(x, dtype=float)
    return np.exp(log_sigmoid(x))


def margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected) -> np.ndarray:
    """DPO margin ρ = (logp_chosen − logp_rejected) − (ref_logp_chosen − ref_logp_rejected).

    Parameters are arrays of shape (n,) of summed response log-probabilities: the policy side
    (possibly conditioned on a system prompt s) and the reference side (no system prompt).
    Adding any function of the prompt to both policy (or both reference) log-probs leaves ρ
    unchanged, so prompt-level normalisers cancel.

    Raises ``ValueError`` on shape mismatch or a non-finite entry (naming its index).
    """
    arrs = [
        _finite_array(a, n)
        for a, n in zip(
            (logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected),
            ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected"),
        )
    ]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise ValueError(f"margin: arrays have different shapes {[a.shape for a in arrs]}")
    lc, lr, rc, rr = arrs
    return (lc - lr) - (rc - rr)


def dpo_loss(margins, beta: float, reduction: str = "mean"):
    """DPO loss −log σ(β ρ_i): per pair (``reduction="none"``, shape (n,)) or its mean (a float).

    ``beta`` must be positive.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    rho = _finite_array(margins, "margins")
    per_pair = -log_sigmoid(beta * rho)
    if reduction == "none":
        return per_pair
    if reduction == "mean":
        if per_pair.size == 0:
            raise ValueError("dpo_loss: empty margins")
        return float(per_pair.mean())
    if reduction == "sum":
        return float(per_pair.sum())
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def dpo_loss_grad(margins, beta: float) -> np.ndarray:
    """Derivative of the per-pair loss with respect to the margin: d/dρ [−log σ(βρ)] = −β σ(−βρ)."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    rho = _finite_array(margins, "margins")
    return -beta * sigmoid(-beta * rho)
