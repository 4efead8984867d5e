"""Student training in the simulator.

Mode (a), the theorem's setting: only v = ψ_S(∅) − ψ_ref(∅) moves and the DPO loss on the selected
pairs is the convex proxy  L(v) = Σ_i w_i · (−log σ(β⟨v, φ_i⟩)),  w_i = 1/m  (lls_theory.theorem).
When the selected pairs are separable (they are when every z_s(i) > 0 and ε = 0) the infimum is 0
and is not attained, so a Δ-approximate minimiser is any v with L(v) ≤ Δ — certified because
inf L ≥ 0. :func:`solve_to_delta` runs damped Newton from v = 0, batched over trials, and stops each
trial as soon as that certificate holds (or, for a non-separable set, when the Newton decrement
says L − inf ≤ Δ/10, which is flagged as not certified).

:func:`gradient_trajectory` follows plain GD or Adam from v = 0 and records v at chosen steps
(training trajectories; "early stops").

Mode (b), robustness: :func:`train_with_moving_features` also trains a shared linear map of the
features, φ ↦ (I + A)φ, which violates the fixed-φ assumption of the theorem.

Batched shapes: Phi (T, m, d) zero-padded, mask (T, m) bool; v (T, d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lls_theory.margins import log_sigmoid, sigmoid

__all__ = ["pad_batch", "batched_loss", "SolveResult", "solve_to_delta", "gradient_trajectory", "train_with_moving_features"]


def pad_batch(Phis: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-trial (m_t, d) matrices into (T, m_max, d) with a (T, m_max) validity mask."""
    if not Phis:
        raise ValueError("no trials")
    d = Phis[0].shape[1]
    m = max(p.shape[0] for p in Phis)
    out = np.zeros((len(Phis), m, d))
    mask = np.zeros((len(Phis), m), dtype=bool)
    for t, p in enumerate(Phis):
        if p.shape[0] == 0:
            raise ValueError(f"trial {t}: no training pairs")
        out[t, : p.shape[0]] = p
        mask[t, : p.shape[0]] = True
    return out, mask


def _weights(mask: np.ndarray) -> np.ndarray:
    return mask / mask.sum(axis=1, keepdims=True)


def batched_loss(V: np.ndarray, Phi: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """Proxy DPO loss per trial, (T,): Σ_i w_i (−log σ(β⟨v_t, φ_ti⟩)) with w = mask / m_t."""
    t = beta * np.einsum("tmd,td->tm", Phi, V)
    return -(log_sigmoid(t) * _weights(mask)).sum(axis=1)


@dataclass
class SolveResult:
    """v: (T, d) solutions; loss: (T,); certified: (T,) bool, loss ≤ Δ (so v is Δ-approximate);
    converged: (T,) bool, certified or decrement-converged; iterations: (T,) Newton steps used."""

    v: np.ndarray
    loss: np.ndarray
    certified: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray


def solve_to_delta(Phi: np.ndarray, mask: np.ndarray, beta: float, delta: float, max_iter: int = 100) -> SolveResult:
    """Damped Newton from v = 0 until each trial's proxy loss is ≤ Δ (see module docstring)."""
    if delta <= 0 or beta <= 0:
        raise ValueError("delta and beta must be positive")
    T, m, d = Phi.shape
    w = _weights(mask)
    V = np.zeros((T, d))
    loss = batched_loss(V, Phi, mask, beta)
    active = loss > delta
    converged = ~active
    iters = np.zeros(T, dtype=int)
    eye = np.eye(d)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        P, W, v = Phi[idx], w[idx], V[idx]
        t = beta * np.einsum("tmd,td->tm", P, v)
        s_neg = sigmoid(-t)
        g = -beta * np.einsum("tm,tmd->td", W * s_neg, P)
        curv = (beta**2) * W * s_neg * sigmoid(t)
        H = np.matmul(P.transpose(0, 2, 1) * curv[:, None, :], P)
        scale = np.trace(H, axis1=1, axis2=2)[:, None, None] / d
        H = H + (1e-10 * scale + 1e-300) * eye
        step = -np.linalg.solve(H, g[..., None])[..., 0]
        decrement = -np.einsum("td,td->t", g, step)  # Newton decrement λ²
        # backtracking line search (Armijo), per trial
        lr = np.ones(idx.size)
        cur = loss[idx]
        new_v = v + step
        new_loss = batched_loss(new_v, P, mask[idx], beta)
        for _ in range(60):
            bad = new_loss > cur - 1e-4 * lr * decrement
            if not bad.any():
                break
            lr = np.where(bad, lr / 2, lr)
            new_v = np.where(bad[:, None], v + lr[:, None] * step, new_v)
            new_loss = np.where(bad, batched_loss(new_v, P, mask[idx], beta), new_loss)
        improved = new_loss <= cur
        V[idx] = np.where(improved[:, None], new_v, v)
        loss[idx] = np.where(improved, new_loss, cur)
        iters[idx] += 1
        done = (loss[idx] <= delta) | (decrement / 2 <= delta / 10) | ~improved
        converged[idx] = (loss[idx] <= delta) | (decrement / 2 <= delta / 10)
        active[idx[done]] = False
    return SolveResult(V, loss, loss <= delta, converged, iters)


def gradient_trajectory(
    Phi: np.ndarray, mask: np.ndarray, beta: float, steps: np.ndarray, lr: float = 1.0, optimizer: str = "gd"
) -> np.ndarray:
    """v after each number of steps in ``steps`` (sorted ints ≥ 0) of GD or Adam from v = 0.

    Returns (len(steps), T, d). The learning rate ``lr`` multiplies the gradient of the proxy loss.
    """
    steps = np.asarray(steps, dtype=int)
    if np.any(np.diff(steps) < 0) or steps.min() < 0:
        raise ValueError("steps must be sorted and non-negative")
    if optimizer not in ("gd", "adam"):
        raise ValueError(f"optimizer must be 'gd' or 'adam', got {optimizer!r}")
    T, m, d = Phi.shape
    w = _weights(mask)
    V = np.zeros((T, d))
    m1, m2 = np.zeros_like(V), np.zeros_like(V)
    out = np.empty((steps.size, T, d))
    k = 0
    for it in range(int(steps.max()) + 1):
        while k < steps.size and steps[k] == it:
            out[k] = V
            k += 1
        if it == steps.max():
            break
        t = beta * np.einsum("tmd,td->tm", Phi, V)
        g = -beta * np.einsum("tm,tmd->td", w * sigmoid(-t), Phi)
        if optimizer == "gd":
            V = V - lr * g
        else:
            m1 = 0.9 * m1 + 0.1 * g
            m2 = 0.999 * m2 + 0.001 * g * g
            mh, vh = m1 / (1 - 0.9 ** (it + 1)), m2 / (1 - 0.999 ** (it + 1))
            V = V - lr * mh / (np.sqrt(vh) + 1e-8)
    return out


def train_with_moving_features(
    Phi: np.ndarray, psi0: np.ndarray, beta: float, steps: int = 300, lr: float = 1.0, lr_features: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Robustness mode (b): train v and a shared feature map A jointly by GD on one trial.

    The trained model has ψ_M(∅) = ψ0 + v and features (I + A)φ; the reference keeps ψ0 and φ, so
    ρ_M(i) = ⟨(I + A)ᵀ(ψ0 + v) − ψ0, φ_i⟩. Returns (v, A). Phi: (m, d), psi0: (d,).
    """
    m, d = Phi.shape
    v = np.zeros(d)
    A = np.zeros((d, d))
    for _ in range(steps):
        eff = (np.eye(d) + A).T @ (psi0 + v) - psi0
        t = beta * Phi @ eff
        coef = -(beta / m) * sigmoid(-t)  # d loss / d eff = Σ coef_i φ_i
        g_eff = coef @ Phi
        g_v = (np.eye(d) + A) @ g_eff
        g_A = np.outer(psi0 + v, g_eff)  # d/dA of ⟨(I+A)ᵀ(ψ0+v), g⟩ = (ψ0+v) gᵀ
        v = v - lr * g_v
        A = A - lr_features * g_A
    return v, A
