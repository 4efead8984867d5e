"""Exact certification helpers used by :mod:`lls_theory.proof.steps`.

``poly_nonneg(expr, var, lo, hi)`` decides whether a polynomial with rational coefficients is
≥ 0 on the interval [lo, hi] (hi = None means [lo, ∞)), exactly:

1. substitute var = lo + t (or var = lo + (hi − lo)·t/(1 + t) times (1 + t)^deg for a bounded
   interval), t ≥ 0; if every coefficient of the resulting polynomial in t is ≥ 0 the claim is
   proved ("non-negative coefficients");
2. otherwise isolate the real roots in the interval exactly (sympy ``Poly.intervals``, Sturm /
   continued fractions over ℚ) and evaluate the sign at rational points between them. Between two
   consecutive sample points there is at most one distinct root, so non-negative values at all
   sample points prove the claim; a negative value is an exact counterexample.

No floating point enters a ``pass``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

__all__ = ["Certificate", "poly_nonneg", "Q"]


def Q(x) -> sp.Rational:
    """Exact rational from an int, Fraction, sympy number or a float (via its shortest decimal repr)."""
    if isinstance(x, sp.Basic):
        return sp.nsimplify(x, rational=True)
    if isinstance(x, Fraction):
        return sp.Rational(x.numerator, x.denominator)
    if isinstance(x, int):
        return sp.Integer(x)
    return sp.Rational(repr(float(x)))


@dataclass(frozen=True)
class Certificate:
    """Outcome of an exact check: ``ok``; how it was decided; a point where it fails (or None)."""

    ok: bool
    how: str
    counterexample: dict | None = None


def _coeff_method(p: sp.Poly, var: sp.Symbol, lo, hi) -> bool:
    t = sp.Symbol("t_", nonnegative=True)
    if hi is None:
        q = sp.Poly(sp.expand(p.as_expr().subs(var, lo + t)), t)
    else:
        n = max(p.degree(), 0)
        q = sp.Poly(sp.expand(sp.cancel(p.as_expr().subs(var, lo + (hi - lo) * t / (1 + t)) * (1 + t) ** n)), t)
    return all(c >= 0 for c in q.all_coeffs())


def poly_nonneg(expr, var: sp.Symbol, lo, hi=None) -> Certificate:
    """Exactly decide expr(var) ≥ 0 for all var in [lo, hi] (hi None: [lo, ∞)).

    ``expr`` must be a polynomial in ``var`` with rational coefficients (clear positive
    denominators before calling). Returns a :class:`Certificate`; on failure the counterexample
    holds the exact rational point ``{var: value}`` and the value of expr there.
    """
    lo = Q(lo)
    hi = None if hi is None else Q(hi)
    p = sp.Poly(sp.expand(expr), var, domain="QQ")
    rng = f"[{lo}, {'∞' if hi is None else hi}]"
    if p.is_zero:
        return Certificate(True, f"identically zero on {rng}")
    if _coeff_method(p, var, lo, hi):
        sub = f"{var} = {lo} + t" if hi is None else f"{var} = {lo} + ({hi - lo})·t/(1+t), times (1+t)^deg"
        return Certificate(True, f"exact: after {sub} (t ≥ 0) every coefficient is ≥ 0, so ≥ 0 on {rng}")
    ivs = p.intervals(inf=lo, sup=hi) if hi is not None else p.intervals(inf=lo)
    pts = {lo}
    ends = []
    for (a, b), _mult in ivs:
        a, b = sp.Rational(a), sp.Rational(b)
        ends += [a, b]
        pts.update({a, b})
    ends = sorted(ends)
    for a, b in zip(ends, ends[1:]):
        pts.add((a + b) / 2)
    if hi is not None:
        pts.add(hi)
    else:
        pts.add((ends[-1] if ends else lo) + 1)
    pts = sorted(x for x in pts if x >= lo and (hi is None or x <= hi))
    for x in pts:
        val = p.eval(x)
        if val < 0:
            return Certificate(False, f"exact: value {sp.N(val, 6)} < 0 at {var} = {x}",
                               {str(var): float(x), f"{var}_exact": str(x), "value": float(val)})
    if hi is None and p.LC() < 0:  # pragma: no cover - caught by the sample beyond the last root
        return Certificate(False, "negative leading coefficient", {str(var): float(pts[-1] + 1)})
    return Certificate(True, f"exact: real roots isolated in {rng} (sympy Poly.intervals, {len(ivs)} root"
                             f" interval(s)); sign ≥ 0 at {len(pts)} rational sample points between them")
