"""Student training in the simulator.

Mode (a), the theorem's setting: only v = ψ_S(∅) − ψ_ref(∅) moves and the DPO loss on the selected
pairs is the convex proxy  L(v) = Σ_i w_i · (−log σ(β⟨v, φ_i⟩)),  w_i = 1/m  (lls_theory.theorem).
When the selected pairs are separable (they are when every z_s(i) > 0 and ε = 0) the infimum is 0
and is not attained, so a Δ-approximate minimiser is any v with L(v) ≤ Δ — certified because
inf L ≥ 0. :func:`solve_to_delta` runs damped Newton from v = 0, batched over trials, and stops each
trial as soon as that certificate holds (or, for a non-separable set, when the Newton decrement
λ²/2 ≤ Δ/10). A trial that stopped on the decrement is then certified by a Fenchel duality gap
(:func:`duality_gap`: a proven lower bound on inf L within Δ of L(v)), or reported as not
certified. ``SolveResult.certificate`` says which certificate holds ("loss", "duality-gap", "none").

:func:`gradient_trajectory` follows plain GD or Adam from v = 0 and records v at chosen steps
(training trajectories; "early stops").

Mode (b), robustness: :func:`train_with_moving_features` also trains a shared linear map of the
features, φ ↦ (I + A)φ, which violates the fixed-φ assumption of the theorem.

Batched shapes: Phi (T, m, d) zero-padded, mask (T, m) bool; v (T, d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

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
    """v: (T, d) solutions; loss: (T,) exact float64 L(v); iterations: (T,) Newton steps used;
    certified: (T,) bool, v is a proven Δ-approximate minimiser, by one of two certificates:
    certificate: (T,) str, "loss" (L(v) ≤ Δ and inf L ≥ 0), "duality-gap" (L(v) − a dual lower
        bound on inf L ≤ Δ, see :func:`duality_gap`) or "none";
    gap: (T,) the certified bound on L(v) − inf L (the loss itself for "loss"; inf where no
        certificate could be built);
    converged: (T,) bool, certified or stopped by the Newton-decrement rule (λ²/2 ≤ Δ/10)."""

    v: np.ndarray
    loss: np.ndarray
    certified: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    certificate: np.ndarray | None = None
    gap: np.ndarray | None = None


# Hessian rows: a row counts when its curvature is above this fraction of the trial's largest
# (below it a row adds < 1e-10·m of H's scale, under float32 resolution for m ≤ 10⁵).
_LIVE_CURVATURE = 1e-10
# exp arguments are floored here in the steering kernels: e^{−708} ≈ 3.3e-308 is still a normal
# float64, while results in the subnormal range take a ~100× slower path in exp (margins reach
# thousands in the separable tail); a term below 3.3e-308 is counted as 3.3e-308 (no effect on steps)
_EXP_FLOOR = -708.0


def _loss_from_margins(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ_i w_i (−log σ(t_i)) per row, (A,), for t = β⟨v, φ_i⟩ of shape (A, m) (float64).

    −log σ(t) = log1p(e^{−t}), in place with numpy's vectorised exp/log1p (about 2× faster than
    scipy's log_expit here), exact to a few ulp for −709 < t < 708 (above, the term is counted as
    e^{−708}, see _EXP_FLOOR); a row where e^{−t} overflows is recomputed as
    max(−t, 0) + log1p(e^{−|t|}). Steers the line search only: the certificate is :func:`_exact_loss`."""
    x = np.negative(t)
    np.maximum(x, _EXP_FLOOR, out=x)
    with np.errstate(over="ignore", invalid="ignore"):
        np.exp(x, out=x)
        np.log1p(x, out=x)
        loss = np.einsum("tm,tm->t", x, w)
    bad = np.flatnonzero(~np.isfinite(loss))
    if bad.size:
        tb = t[bad]
        loss[bad] = np.einsum("tm,tm->t", np.log1p(np.exp(np.maximum(-np.abs(tb), _EXP_FLOOR))) - np.minimum(tb, 0.0), w[bad])
    return loss


def _sigmoids(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(σ(−t), σ(t)σ(−t)) for float64 margins t, from one exp: with e = e^{−|t|} and r = 1/(1 + e),
    σ(−t) = e·r for t ≥ 0 and r for t < 0, and σ(t)σ(−t) = e·r² (both without overflow; |t| is
    capped at 708, see _EXP_FLOOR)."""
    e = np.abs(t)
    np.negative(e, out=e)
    np.maximum(e, _EXP_FLOOR, out=e)
    np.exp(e, out=e)
    r = e + 1.0
    np.reciprocal(r, out=r)
    e *= r  # e·r = σ(−|t|)
    curv = e * r
    np.copyto(e, r, where=t < 0)
    return e, curv


def _hessian_live(P_h: np.ndarray, rel: np.ndarray, all_rows: bool) -> np.ndarray:
    """Σ_i rel_i φ_i φ_iᵀ per trial, (A, d, d) in P_h's dtype, over the live rows only.

    P_h (A, m, d) C-contiguous, rel (A, m) curvatures relative to each trial's largest. With
    ``all_rows`` (every rel = 1: v = 0, nothing padded) this is Φᵀ Φ (numpy's matmul uses syrk).
    Otherwise the rows with rel > _LIVE_CURVATURE of all trials are gathered into one (ΣK, d) array
    scaled by √rel (no (A, m, d) temporary) and each trial's block Y_k gives Y_kᵀ Y_k (syrk), so a
    trial pays for its own live rows, not for the most of any trial."""
    A, m, d = P_h.shape
    H = np.empty((A, d, d), dtype=P_h.dtype)
    if all_rows:
        return np.matmul(P_h.transpose(0, 2, 1), P_h, out=H)
    live = rel > _LIVE_CURVATURE
    idx = np.flatnonzero(live)
    Y = np.take(P_h.reshape(A * m, d), idx, axis=0)
    Y *= np.sqrt(rel.ravel()[idx]).astype(P_h.dtype)[:, None]
    ends = np.cumsum(live.sum(axis=1))
    start = 0
    for k in range(A):
        y = Y[start:ends[k]]
        np.matmul(y.T, y, out=H[k])
        start = ends[k]
    return H


def _exact_loss(Phi: np.ndarray, V: np.ndarray, w: np.ndarray, beta: float, return_margins: bool = False,
                rows: np.ndarray | None = None):
    """The certificate's loss, (A,): Σ_i w_i (−log σ(β⟨v, φ_i⟩)) in float64 throughout, from Φ (A, m, d)
    and v (A, d) directly (no running sums), with lls_theory's log σ. Optionally also t = βΦv.
    ``rows``: use Φ[rows] (one per row of V) without copying them out first."""
    if rows is None and Phi.dtype == np.float64:
        t = beta * np.matmul(Phi, V[:, :, None])[:, :, 0]
    else:  # one trial at a time, through one float64 buffer that stays in cache
        rows = np.arange(Phi.shape[0]) if rows is None else rows
        t = np.empty((len(rows), Phi.shape[1]))
        buf = np.empty(Phi.shape[1:])
        for j, k in enumerate(rows):
            np.copyto(buf, Phi[k])  # exact: float32 → float64
            t[j] = beta * (buf @ V[j])
    loss = -(log_sigmoid(t) * w).sum(axis=1)
    return (loss, t) if return_margins else loss


def solve_to_delta(
    Phi: np.ndarray, mask: np.ndarray, beta: float, delta: float, max_iter: int = 100,
    hessian_dtype=np.float32, extrapolate: bool = True, max_doublings: int = 10,
) -> SolveResult:
    """Damped Newton from v = 0 until each trial's proxy loss is ≤ Δ (see module docstring).

    Phi: (T, m, d) float64 or float32, zero-padded; mask: (T, m) bool. Returns v (T, d) float64.

    Per Newton step and trial (A active trials): g = −β Φᵀ(w ∘ σ(−t)), H = β² Φᵀ diag(w σ(t) σ(−t)) Φ
    with t = βΦv kept as a running (A, m) float64 array, so the backtracking line search on
    t + η·βΦ·step never touches Φ. H is accumulated in ``hessian_dtype`` (float32 halves its
    cost; curvatures are rescaled by their per-trial maximum first so none underflows) — it only
    steers the step. The certificate never uses the running t: a trial is reported certified
    only when L(v) ≤ Δ recomputed in float64 from Φ and v (:func:`_exact_loss`, with
    lls_theory's log σ). Finished trials are dropped from the working arrays when fewer than half
    remain active (one copy at most per halving).

    The steps, in order: :func:`_check_solve_inputs`, :meth:`_SolveState.start` (trials already
    done at v = 0), then per iteration :func:`_newton_iteration` (direction :func:`_newton_direction`,
    line search :func:`_backtrack` and :func:`_extrapolate`, update and exact check
    :meth:`_SolveState.accept`), and finally :func:`_certify` (exact losses, duality gaps).
    """
    Phi, mask = _check_solve_inputs(Phi, mask, beta, delta)
    w = _weights(mask)
    state = _SolveState.start(Phi.shape, w, delta)
    act = np.flatnonzero(state.loss > delta)  # trials still being solved (ids into 0..T-1)
    work = _WorkingSet.start(Phi, w, act, np.dtype(hessian_dtype))
    all_rows = bool(mask.all())
    for it in range(max_iter):
        if act.size == 0:
            break
        first = it == 0 and all_rows  # v = 0 and no padded rows
        act = _newton_iteration(state, work, act, beta, delta, first, extrapolate, max_doublings)
    return _certify(state, Phi, mask, w, beta, delta)


def _check_solve_inputs(Phi: np.ndarray, mask: np.ndarray, beta: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Φ as a float32/float64 (T, m, d) array and the mask as bool; ``ValueError`` on bad β, Δ or shape."""
    if not (delta > 0 and beta > 0 and np.isfinite(delta) and np.isfinite(beta)):
        raise ValueError(f"delta and beta must be positive and finite, got delta={delta}, beta={beta}")
    Phi = np.ascontiguousarray(Phi)  # no copy unless Φ is a strided view (the Hessian kernel reshapes it)
    if Phi.dtype not in (np.float32, np.float64):
        Phi = Phi.astype(np.float64)
    if Phi.ndim != 3:
        raise ValueError(f"Phi must have shape (T, m, d), got {Phi.shape}")
    return Phi, np.asarray(mask, dtype=bool)


@dataclass
class _SolveState:
    """Per-trial state of :func:`solve_to_delta`, indexed by trial id 0..T-1 and updated in place.

    V (T, d) the iterate v; tt (T, m) the running margins β⟨v, φ_i⟩ (float64); loss (T,); certified,
    converged (T,) bool; iters (T,) Newton steps taken; exact (T,) bool, loss[k] was recomputed from Φ
    and v (:func:`_exact_loss`) since v last moved."""

    V: np.ndarray
    tt: np.ndarray
    loss: np.ndarray
    certified: np.ndarray
    converged: np.ndarray
    iters: np.ndarray
    exact: np.ndarray

    @classmethod
    def start(cls, shape: tuple[int, int, int], w: np.ndarray, delta: float) -> "_SolveState":
        """The state at v = 0; trials whose loss there is already ≤ Δ are certified and converged."""
        T, m, d = shape
        tt = np.zeros((T, m))
        loss = _loss_from_margins(tt, w)
        state = cls(np.zeros((T, d)), tt, loss, np.zeros(T, dtype=bool), np.zeros(T, dtype=bool),
                    np.zeros(T, dtype=int), np.zeros(T, dtype=bool))
        done0 = np.flatnonzero(loss <= delta)
        state.certified[done0] = state.converged[done0] = True
        return state

    def accept(self, act: np.ndarray, v: np.ndarray, step: np.ndarray, lr: np.ndarray, t: np.ndarray,
               new_t: np.ndarray, new_loss: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """Move the trials ``act`` to v + lr·step where that does not raise the loss (else keep v);
        count the step. Returns the (A,) bool mask of trials that moved."""
        improved = new_loss <= cur
        self.V[act] = np.where(improved[:, None], v + lr[:, None] * step, v)
        self.exact[act[improved]] = False
        self.tt[act] = np.where(improved[:, None], new_t, t)
        self.loss[act] = np.where(improved, new_loss, cur)
        self.iters[act] += 1
        return improved

    def check_exactly(self, act: np.ndarray, P: np.ndarray, pos: np.ndarray, Wa: np.ndarray, beta: float,
                      delta: float) -> None:
        """A trial of ``act`` that looks done (running loss ≤ Δ) is checked in float64 from Φ (row ``pos`` of
        the working set's ``P``) and v; if round-off in the running t hid a loss above Δ, it goes on from the
        exact margins."""
        cand = np.flatnonzero(self.loss[act] <= delta)
        if cand.size:
            ids = act[cand]
            ex, t_ex = _exact_loss(P, self.V[ids], Wa[cand], beta, return_margins=True, rows=pos[cand])
            self.certified[ids] = ex <= delta
            self.loss[ids] = ex
            self.exact[ids] = True
            self.tt[ids] = t_ex


@dataclass
class _WorkingSet:
    """The trials whose data the Newton steps compute on: ``rows`` (ascending trial ids), their Φ
    (``P``), Φ in the Hessian's dtype (``P_h``) and weights (``W``)."""

    rows: np.ndarray
    P: np.ndarray
    P_h: np.ndarray
    W: np.ndarray

    @classmethod
    def start(cls, Phi: np.ndarray, w: np.ndarray, act: np.ndarray, hdt: np.dtype) -> "_WorkingSet":
        """The working set of the active trials ``act`` (Φ itself, uncopied, when all are active)."""
        P = Phi[act] if act.size < Phi.shape[0] else Phi
        return cls(act, P, P if P.dtype == hdt else P.astype(hdt), w[act])

    def compact(self, act: np.ndarray) -> None:
        """Drop finished trials once at most half the rows are active (one copy at most per halving)."""
        if act.size <= self.rows.size // 2:
            keep = np.searchsorted(self.rows, act)
            self.P, self.P_h, self.W, self.rows = self.P[keep], self.P_h[keep], self.W[keep], act


def _newton_iteration(state: _SolveState, work: _WorkingSet, act: np.ndarray, beta: float, delta: float,
                      first: bool, extrapolate: bool, max_doublings: int) -> np.ndarray:
    """One damped Newton step of the active trials ``act``; returns the trials still active after it.

    A trial finishes when it is certified (exact L(v) ≤ Δ), when its Newton decrement λ²/2 ≤ Δ/10, or
    when no step length lowered its loss."""
    work.compact(act)
    # every row of the working set is computed (cheaper than gathering the live ones each step); only
    # the live ones (pos) are updated
    pos = np.searchsorted(work.rows, act)
    t_all = state.tt[work.rows]
    g, step, dt = _newton_direction(work, t_all, beta, first)
    g, step, dt, Wa = g[pos], step[pos], dt[pos], work.W[pos]
    decrement = -np.einsum("td,td->t", g, step)  # Newton decrement λ²
    t, v, cur = t_all[pos], state.V[act], state.loss[act]
    lr, new_t, new_loss = _backtrack(t, dt, Wa, cur, decrement)
    if extrapolate:
        _extrapolate(lr, new_t, new_loss, t, dt, Wa, decrement, delta, max_doublings)
    improved = state.accept(act, v, step, lr, t, new_t, new_loss, cur)
    state.check_exactly(act, work.P, pos, Wa, beta, delta)
    dec_done = decrement / 2 <= delta / 10
    state.converged[act] = state.certified[act] | dec_done
    finished = state.certified[act] | dec_done | ~improved
    return act[~finished]


def _newton_direction(work: _WorkingSet, t_all: np.ndarray, beta: float,
                      first: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient g (R, d), Newton step −H⁻¹g (R, d) and its margin change dt = βΦ·step (R, m), float64,
    for every trial of the working set at the running margins ``t_all`` (R, m)."""
    P = work.P
    s_neg, curv = _sigmoids(t_all)
    s_neg *= work.W
    g = -beta * np.matmul(s_neg[:, None, :].astype(P.dtype, copy=False), P)[:, 0].astype(np.float64)
    curv *= work.W
    H = _hessian(work.P_h, curv, beta, first)
    step = -np.linalg.solve(H, g[..., None])[..., 0]
    dt = beta * np.matmul(P, step[:, :, None].astype(P.dtype, copy=False))[:, :, 0].astype(np.float64)
    return g, step, dt


def _hessian(P_h: np.ndarray, curv: np.ndarray, beta: float, first: bool) -> np.ndarray:
    """H = β² Φᵀ diag(curv) Φ per trial, (R, d, d) float64, symmetrised and regularised by 1e-10·tr(H)/d.

    Accumulated in ``P_h``'s dtype with the curvatures rescaled by their per-trial maximum (so none
    underflows); ``first``: v = 0 with no padded rows, where every curvature is w/4 (rel = 1 on every row)."""
    d = P_h.shape[2]
    cmax = curv.max(axis=1, keepdims=True)
    cmax[cmax == 0] = 1.0
    rel = curv / cmax
    # rows whose curvature is below 1e-10 of the trial's largest add < 2e-7·m relative to H
    # (below float32 resolution): once v has grown they are most rows, and H is summed over
    # each trial's live rows only; at v = 0 every curvature is w/4 (rel = 1, none padded): ΦᵀΦ
    H = _hessian_live(P_h, rel, first).astype(np.float64) * ((beta**2) * cmax[:, :, None])
    H = 0.5 * (H + H.transpose(0, 2, 1))
    scale = np.trace(H, axis1=1, axis2=2)[:, None, None] / d
    H += (1e-10 * scale + 1e-300) * np.eye(d)
    return H


def _backtrack(t: np.ndarray, dt: np.ndarray, Wa: np.ndarray, cur: np.ndarray,
               decrement: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backtracking (Armijo) line search on the running margins, no pass over Φ: step lengths lr (A,),
    margins t + lr·dt (A, m) and their losses (A,), halving lr (up to 60 times) until the loss drops by
    1e-4·lr·λ²."""
    lr = np.ones(t.shape[0])
    new_t = t + dt
    new_loss = _loss_from_margins(new_t, Wa)
    for _ in range(60):
        bad = np.flatnonzero(new_loss > cur - 1e-4 * lr * decrement)
        if bad.size == 0:
            break
        lr[bad] /= 2
        new_t[bad] = t[bad] + lr[bad, None] * dt[bad]
        new_loss[bad] = _loss_from_margins(new_t[bad], Wa[bad])
    return lr, new_t, new_loss


def _extrapolate(lr: np.ndarray, new_t: np.ndarray, new_loss: np.ndarray, t: np.ndarray, dt: np.ndarray,
                 Wa: np.ndarray, decrement: np.ndarray, delta: float, max_doublings: int) -> None:
    """Where the full step was accepted, keep doubling it (in place) while the loss still drops by the
    Armijo amount and stays above Δ (in the separable tail a Newton step only divides the loss by ≈ e)."""
    grow = np.flatnonzero((lr == 1.0) & (new_loss > delta))
    for _ in range(max_doublings):
        if grow.size == 0:
            break
        lr2 = lr[grow] * 2
        t2 = t[grow] + lr2[:, None] * dt[grow]
        l2 = _loss_from_margins(t2, Wa[grow])
        ok = l2 <= new_loss[grow] - 1e-4 * (lr2 - lr[grow]) * decrement[grow]
        sel = grow[ok]
        lr[sel], new_t[sel], new_loss[sel] = lr2[ok], t2[ok], l2[ok]
        grow = sel[new_loss[sel] > delta]


def _certify(state: _SolveState, Phi: np.ndarray, mask: np.ndarray, w: np.ndarray, beta: float,
             delta: float) -> SolveResult:
    """The result: every reported loss is the exact float64 one (those checked in the loop already are);
    a trial is certified by its loss (≤ Δ) or else by its duality gap (:func:`duality_gap` ≤ Δ)."""
    V, loss = state.V, state.loss
    T = Phi.shape[0]
    todo = np.flatnonzero(~state.exact)
    if todo.size:
        full = todo.size == T
        loss[todo] = _exact_loss(Phi if full else Phi[todo], V[todo], w[todo], beta)
    by_loss = loss <= delta
    gap = np.where(by_loss, loss, np.inf)
    rest = np.flatnonzero(~by_loss)
    if rest.size:
        gap[rest] = duality_gap(V[rest], Phi[rest], mask[rest], beta)
    by_gap = ~by_loss & (gap <= delta)
    certificate = np.where(by_loss, "loss", np.where(by_gap, "duality-gap", "none"))
    certified = by_loss | by_gap
    return SolveResult(V, loss, certified, state.converged | certified, state.iters, certificate, gap)


def duality_gap(V: np.ndarray, Phi: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """A proven upper bound on L(v̂) − inf L per trial, (A,), from Fenchel duality (float64).

    V (A, d) the solutions v̂, Phi (A, m, d) zero-padded, mask (A, m). Since
    log(1 + e^{−x}) = max_{a∈[0,1]} (−a·x + H(a)) (H the binary entropy in nats), every a ∈ [0, 1]^m
    gives, for all v,

        L(v) ≥ D(a) − β⟨v, r⟩,   D(a) = Σ_i w_i H(a_i),   r = Σ_i w_i a_i φ_i.

    The dual point is a_i = σ(−β⟨v̂, φ_i⟩) (optimal at the minimiser, where r = 0), corrected twice
    by a ← a − a(1−a)∘Φλ with (Σ w a(1−a) φφᵀ) λ = r, which leaves r at round-off (≈ 1e-18).
    Because r is not exactly 0, the term β⟨v*, r⟩ at a minimiser v* is bounded as well: along any
    unit direction h, g(t) = L(v̂ + t h) has |g‴| ≤ ρ g″ with ρ = β max_i ‖φ_i‖ (|ℓ‴| ≤ ℓ″ for the
    logistic loss), so g″(t) ≥ λ_min(∇²L(v̂)) e^{−ρt}; if ρ‖∇L(v̂)‖ < λ_min a minimiser exists and
    ‖v* − v̂‖ ≤ T = −log(1 − ρ‖∇L(v̂)‖/λ_min)/ρ. The returned gap is

        L(v̂) − D(a) + β (‖v̂‖ + T) ‖r‖,

    with ‖r‖ and ‖∇L‖ each enlarged by a float64 rounding bound (m·2⁻⁵² times the sum of the
    absolute terms) and λ_min shrunk by 1e-10·λ_max; inf where a leaves [0, 1] or λ_min is too
    small (e.g. separable data, where no minimiser exists — those trials use the "loss"
    certificate). The remaining sums are float64 (≈ m·1e-16 relative), far below any Δ used here.
    """
    A = Phi.shape[0]
    P = Phi.astype(np.float64, copy=False)
    w = _weights(mask)
    out = np.full(A, np.inf)
    x = beta * np.matmul(P, V[:, :, None])[:, :, 0]
    loss = -(log_sigmoid(x) * w).sum(axis=1)
    for k in range(A):
        keep = mask[k]
        out[k] = _trial_gap(P[k][keep], w[k][keep], x[k][keep], float(loss[k]), float(np.linalg.norm(V[k])), beta)
    return out


_EPS = 2.0**-52  # float64 unit roundoff bound used by the rounding enlargements of :func:`duality_gap`


def _trial_gap(Pk: np.ndarray, wk: np.ndarray, xk: np.ndarray, loss: float, v_norm: float, beta: float) -> float:
    """:func:`duality_gap` of one trial from its live rows Φ (n, d), weights (n,), margins x = βΦv̂ (n,),
    L(v̂) and ‖v̂‖; inf when no certificate can be built."""
    from scipy.special import entr

    n = Pk.shape[0]
    row_norm = np.linalg.norm(Pk, axis=1)
    s_neg = expit(-xk)
    T = _distance_to_minimiser(Pk, wk, xk, s_neg, row_norm, beta)
    if T is None:
        return np.inf
    ak = _dual_point(Pk, wk, s_neg)
    if not (np.all(ak >= 0) and np.all(ak <= 1)):
        return np.inf
    r = Pk.T @ (wk * ak)
    r_norm = float(np.linalg.norm(r)) + n * _EPS * float(np.sum(wk * ak * row_norm))
    dual = float(np.sum(wk * (entr(ak) + entr(1 - ak))))
    return max(loss - dual, 0.0) + beta * (v_norm + T) * r_norm


def _distance_to_minimiser(Pk: np.ndarray, wk: np.ndarray, xk: np.ndarray, s_neg: np.ndarray,
                           row_norm: np.ndarray, beta: float) -> float | None:
    """The primal side of :func:`duality_gap`: the bound T ≥ ‖v* − v̂‖ from the gradient and the smallest
    Hessian eigenvalue at v̂ (self-concordance with ρ = β max_i ‖φ_i‖), or None when ρ‖∇L‖ ≥ λ_min."""
    n = Pk.shape[0]
    s_pos = expit(xk)
    grad = -beta * (Pk.T @ (wk * s_neg))
    grad_norm = float(np.linalg.norm(grad)) + n * _EPS * beta * float(np.sum(wk * s_neg * row_norm))
    H = (beta**2) * (Pk.T @ (Pk * (wk * s_neg * s_pos)[:, None]))
    ev = np.linalg.eigvalsh((H + H.T) / 2)
    lam_min = float(ev[0]) - 1e-10 * float(abs(ev[-1]))
    rho = beta * float(row_norm.max())
    if not (lam_min > 0 and rho * grad_norm < lam_min):
        return None
    return -np.log1p(-rho * grad_norm / lam_min) / rho if rho > 0 else grad_norm / lam_min


def _dual_point(Pk: np.ndarray, wk: np.ndarray, s_neg: np.ndarray) -> np.ndarray:
    """The dual side of :func:`duality_gap`: a = σ(−β⟨v̂, φ_i⟩) corrected twice by a ← a − a(1−a)∘Φλ with
    (Σ w a(1−a) φφᵀ) λ = r, so that r = Σ w_i a_i φ_i is at round-off (stops early on a singular system)."""
    ak = s_neg.copy()
    for _ in range(2):
        r = Pk.T @ (wk * ak)
        c = ak * (1 - ak)
        M = Pk.T @ (Pk * (wk * c)[:, None])
        try:
            ak = ak - c * (Pk @ np.linalg.solve(M, r))
        except np.linalg.LinAlgError:
            break
    return ak


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
