"""A genuine log-linear world: features φ, system-prompt embeddings ψ, preference data.

Each prompt p has K candidate responses r with features φ(p, r) ∈ R^d. A model with embedding ψ
assigns

    log Pr[r | s, p] = ⟨ψ(s), φ(p, r)⟩ − log Σ_{r'} exp⟨ψ(s), φ(p, r')⟩ + η(s, p, r),   |η| ≤ ε,

a softmax over the prompt's responses plus an optional perturbation η (random or adversarial) that
makes the linear representation only ε-approximate (Definition 2.1). The softmax normaliser depends
only on (s, p), so it cancels in every margin ρ.

Teacher and student can differ: their features share a k-dimensional subspace ("overlap"), the
rest is independent — the simulated analogue of a same-family vs cross-family teacher.
Preferences (chosen/rejected) come from a Bradley–Terry draw along a hidden quality direction
independent of the system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

__all__ = ["WorldConfig", "World", "make_world", "PHI_FAMILIES", "sample_features"]

PHI_FAMILIES = ("gaussian", "anisotropic", "heavy_tailed", "sparse")


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of one simulated world (all sizes are counts, all scales are in nats).

    d: feature dimension; n_prompts: prompts in the pool; k_responses: responses per prompt;
    family: φ generator (see :func:`sample_features`); cond: condition number for "anisotropic";
    overlap: dimensions the teacher's features share with the student's (None = d, same model);
    trait_strength: ‖ψ(s) − ψ(∅)‖ (the system prompt's effect); quality_strength: Bradley–Terry
    scale of the label process; eps: perturbation size ε; perturbation: "none", "random" or
    "adversarial"; tokens: (lo, hi) response token counts, or None for a constant 20.
    """

    d: int = 16
    n_prompts: int = 3000
    k_responses: int = 4
    family: str = "gaussian"
    cond: float = 10.0
    overlap: int | None = None
    trait_strength: float = 1.0
    quality_strength: float = 1.0
    eps: float = 0.0
    perturbation: str = "none"
    tokens: tuple[int, int] | None = (8, 64)

    def __post_init__(self):
        if self.d < 1 or self.n_prompts < 2 or self.k_responses < 2:
            raise ValueError("need d ≥ 1, n_prompts ≥ 2, k_responses ≥ 2")
        if self.family not in PHI_FAMILIES:
            raise ValueError(f"family must be one of {PHI_FAMILIES}, got {self.family!r}")
        if self.overlap is not None and not 0 <= self.overlap <= self.d:
            raise ValueError(f"overlap must be in [0, d={self.d}], got {self.overlap}")
        if self.perturbation not in ("none", "random", "adversarial"):
            raise ValueError(f"perturbation must be none/random/adversarial, got {self.perturbation!r}")
        if self.eps < 0:
            raise ValueError(f"eps must be ≥ 0, got {self.eps}")
        if self.tokens is not None and not 1 <= self.tokens[0] <= self.tokens[1]:
            raise ValueError(f"tokens must be (lo, hi) with 1 ≤ lo ≤ hi, got {self.tokens}")


def sample_features(rng: np.random.Generator, shape: tuple[int, ...], family: str, cond: float = 10.0) -> np.ndarray:
    """Features of shape (..., d) from a family:

    gaussian: i.i.d. N(0, 1/d) coordinates (well-behaved differences when m ≥ 2d);
    anisotropic: coordinate j scaled by cond^(−j/(d−1)), condition number ``cond``;
    heavy_tailed: Student-t with 2.5 degrees of freedom (finite variance, heavy tails);
    sparse: each vector has a single non-zero coordinate (coherent; its difference vectors span
        contains nearly sparse vectors, which breaks well-behavedness).
    """
    d = shape[-1]
    if family == "gaussian":
        return rng.standard_normal(shape) / np.sqrt(d)
    if family == "anisotropic":
        scales = cond ** (-np.arange(d) / max(d - 1, 1))
        return rng.standard_normal(shape) * scales / np.sqrt(np.mean(scales**2) * d)
    if family == "heavy_tailed":
        return rng.standard_t(2.5, size=shape) / np.sqrt(5.0 * d)
    if family == "sparse":
        out = np.zeros(shape)
        idx = rng.integers(0, d, size=shape[:-1])
        np.put_along_axis(out, idx[..., None], rng.standard_normal(shape[:-1])[..., None] * 3.0, axis=-1)
        return out
    raise ValueError(f"unknown family {family!r}")


@dataclass
class World:
    """A sampled world. Shapes: P prompts, K responses, d features.

    phi_student, phi_teacher: (P, K, d) features under the student's and the teacher's model.
    psi0: ψ_ref(∅) of the student (the teacher has ψ_T(∅) = psi0_teacher), (d,).
    u_student, u_teacher: ψ(s) − ψ(∅), (d,): the system prompt's shift for each model.
    eta: perturbations η[(model, prompted)] of shape (P, K), |η| ≤ ε, keyed by
        ("student"|"teacher", False|True).
    pairs: (n_pairs, 3) int array of (prompt, chosen response, rejected response).
    n_tokens: (P, K) response token counts under the teacher's tokenizer.
    """

    config: WorldConfig
    phi_student: np.ndarray
    phi_teacher: np.ndarray
    psi0: np.ndarray
    psi0_teacher: np.ndarray
    u_student: np.ndarray
    u_teacher: np.ndarray
    quality: np.ndarray
    eta: dict = field(default_factory=dict)
    pairs: np.ndarray | None = None
    n_tokens: np.ndarray | None = None

    # ------------------------------------------------------------------ log-probabilities
    def logprobs(self, who: str, psi: np.ndarray, prompted: bool | None = None) -> np.ndarray:
        """log Pr[r | ·, p] of shape (P, K) for a model of this world with embedding ``psi``.

        ``prompted`` selects which perturbation η applies (the system-prompted or the plain one);
        None adds no perturbation.
        """
        phi = self.phi_student if who == "student" else self.phi_teacher
        logits = phi @ psi
        out = logits - logsumexp(logits, axis=1, keepdims=True)
        if prompted is not None:
            out = out + self.eta.get((who, bool(prompted)), 0.0)
        return out

    def pair_logprobs(self, lp: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(log Pr[chosen], log Pr[rejected]) for the pairs (all, or rows ``idx``) from a (P, K) table."""
        pr = self.pairs if idx is None else self.pairs[idx]
        return lp[pr[:, 0], pr[:, 1]], lp[pr[:, 0], pr[:, 2]]

    def diff_features(self, who: str = "student", idx: np.ndarray | None = None) -> np.ndarray:
        """φ_i = φ(p_i, r_i+) − φ(p_i, r_i−) for the pairs, shape (n, d)."""
        phi = self.phi_student if who == "student" else self.phi_teacher
        pr = self.pairs if idx is None else self.pairs[idx]
        return phi[pr[:, 0], pr[:, 1]] - phi[pr[:, 0], pr[:, 2]]

    def pair_tokens(self, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pr = self.pairs if idx is None else self.pairs[idx]
        return self.n_tokens[pr[:, 0], pr[:, 1]], self.n_tokens[pr[:, 0], pr[:, 2]]


def _shared_features(rng, cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray]:
    P, K, d = cfg.n_prompts, cfg.k_responses, cfg.d
    student = sample_features(rng, (P, K, d), cfg.family, cfg.cond)
    k = d if cfg.overlap is None else cfg.overlap
    if k == d:
        return student, student
    teacher = student.copy()
    teacher[..., k:] = sample_features(rng, (P, K, d - k), cfg.family, cfg.cond) * np.sqrt((d - k) / d)
    return student, teacher


def _perturbations(rng, cfg: WorldConfig, world: World) -> dict:
    if cfg.perturbation == "none" or cfg.eps == 0:
        return {}
    P, K = cfg.n_prompts, cfg.k_responses
    eta = {}
    for who in ("student", "teacher"):
        if cfg.perturbation == "random":
            for prompted in (False, True):
                eta[(who, prompted)] = rng.uniform(-cfg.eps, cfg.eps, size=(P, K))
        else:
            # adversarial: the system prompt's apparent effect is pushed *against* its linear part,
            # flattening the margins the teacher sees and the ones the student is evaluated on
            phi = world.phi_student if who == "student" else world.phi_teacher
            u = world.u_student if who == "student" else world.u_teacher
            boost = phi @ u
            centred = boost - boost.mean(axis=1, keepdims=True)
            eta[(who, True)] = -cfg.eps * np.sign(centred)
            eta[(who, False)] = cfg.eps * np.sign(centred)
    return eta


def make_world(cfg: WorldConfig, seed: int) -> World:
    """Sample a world from ``cfg`` with ``seed`` (same seed → identical world)."""
    rng = np.random.default_rng(seed)
    d = cfg.d
    phi_s, phi_t = _shared_features(rng, cfg)
    k = d if cfg.overlap is None else cfg.overlap

    def direction(scale):
        v = rng.standard_normal(d)
        return scale * v / np.linalg.norm(v)

    psi0 = direction(np.sqrt(d))  # base model: responses differ by O(1) nats
    u_s = direction(cfg.trait_strength * np.sqrt(d))
    # the teacher's system prompt "means the same" on the shared coordinates, something else elsewhere
    u_t = u_s.copy()
    psi0_t = psi0.copy()
    if k < d:
        u_t[k:] = direction(cfg.trait_strength * np.sqrt(d))[k:]
        psi0_t[k:] = direction(np.sqrt(d))[k:]
    quality = direction(cfg.quality_strength * np.sqrt(d))

    # one preference pair per prompt: two distinct responses, labelled by Bradley–Terry on quality
    P, K = cfg.n_prompts, cfg.k_responses
    a = rng.integers(0, K, size=P)
    b = (a + rng.integers(1, K, size=P)) % K
    q = phi_s @ quality
    p_a = 1.0 / (1.0 + np.exp(-(q[np.arange(P), a] - q[np.arange(P), b])))
    a_wins = rng.random(P) < p_a
    pairs = np.stack([np.arange(P), np.where(a_wins, a, b), np.where(a_wins, b, a)], axis=1)
    if cfg.tokens is None:
        n_tokens = np.full((P, K), 20)
    else:
        n_tokens = rng.integers(cfg.tokens[0], cfg.tokens[1] + 1, size=(P, K))

    world = World(cfg, phi_s, phi_t, psi0, psi0_t, u_s, u_t, quality, pairs=pairs, n_tokens=n_tokens)
    world.eta = _perturbations(rng, cfg, world)
    return world
