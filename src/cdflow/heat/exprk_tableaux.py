"""Embedded explicit exponential Runge–Kutta pairs for u' = A u + N(t, u) (A = −γL), in stage-difference form.

With w = A u_n + N(t_n, u_n) and D_j = N(t_n + c_j h, U_j) − N(t_n, u_n) (Hochbruck & Ostermann 2005,
"Explicit exponential Runge–Kutta methods for semilinear parabolic problems", SIAM J. Numer. Anal. 43,
1069–1090, eq. (2.5) rewritten with D_j; also Acta Numerica 19 (2010) 209–286, Sec. 2.3):

    U_i     = u_n + c_i h φ_1(c_i hA) w + h Σ_{1≤j<i} a_ij(hA) D_j
    u_{n+1} = u_n + h φ_1(hA) w + h Σ_j b_j(hA) D_j,      û_{n+1}: the same with b̂_j (embedded, lower order)

Each coefficient is a combination Σ coef·φ_k(τ hA) (`PhiComb`), so one Lanczos basis per vector (w, D_1, …)
serves every stage. Linear problems with N ≡ 0 are solved exactly: u_{n+1} = e^{hA} u_n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cdflow.errors import ConfigError
from cdflow.heat.phi import PhiComb


@dataclass(frozen=True)
class ExpRKTableau:
    """An embedded exponential Runge–Kutta pair (see the module docstring).

    c: nodes c_0 = 0, c_1, …, c_{s−1}; ``a[i−1][j−1]``: a_ij for stages i = 1..s−1 and j = 1..i−1 (the D_j);
    b, b_hat: weights of D_1..D_{s−1} of the solution (order `order`) and of the embedded solution (order
    `embedded_order`); source: where the tableau comes from."""

    name: str
    order: int
    embedded_order: int
    c: tuple[float, ...]
    a: tuple[tuple[PhiComb, ...], ...]
    b: tuple[PhiComb, ...]
    b_hat: tuple[PhiComb, ...]
    source: str

    @property
    def stages(self) -> int:
        return len(self.c)

    def needs(self, j: int) -> tuple[tuple[int, float], ...]:
        """The (k, τ) of every φ_k(τ hA) applied to D_j (j ≥ 1) anywhere in the tableau."""
        combs = [row[j - 1] for row in self.a[j:]] + [self.b[j - 1], self.b_hat[j - 1]]
        return tuple(sorted({(k, tau) for comb in combs for k, tau, _ in comb}))

    def weight_bound(self, j: int) -> float:
        """max |coef| over the uses of D_j: scales the Krylov tolerance of its φ-actions."""
        combs = [row[j - 1] for row in self.a[j:]] + [self.b[j - 1], self.b_hat[j - 1]]
        return max([abs(w) for comb in combs for _, _, w in comb] + [1.0])


def at_zero(comb: PhiComb) -> float:
    """The combination at hA = 0 (φ_k(0) = 1/k!): the weight a component without linear part gets."""
    return sum(w / math.factorial(k) for k, _, w in comb)


def difference(b: PhiComb, b_hat: PhiComb) -> PhiComb:
    """b − b̂ as one combination (the error estimator's weights)."""
    return tuple(b) + tuple((k, tau, -w) for k, tau, w in b_hat)


#: Cox & Matthews' ETD2RK (J. Comput. Phys. 176 (2002) 430–455, eq. (22)), the c_2 = 1 member of
#: Hochbruck & Ostermann's stiff-order-2 family (2005, eq. (5.3)); embedded: the exponential Euler method.
EXPRK21 = ExpRKTableau(
    name="exprk21",
    order=2,
    embedded_order=1,
    c=(0.0, 1.0),
    a=((),),
    b=(((2, 1.0, 1.0),),),
    b_hat=((),),
    source="Cox & Matthews 2002 ETD2RK (= Hochbruck & Ostermann 2005 (5.3), c2 = 1); embedded exponential Euler",
)

#: Hochbruck & Ostermann's three-stage method of order 3 (2005, Sec. 5, the family with c_3 = 2/3:
#: a_32 = (c_3²/c_2) φ_2(c_3 hA), b_2 = 0, b_3 = φ_2(hA)/c_3), here with c_2 = 1/2; it meets the stiff order
#: conditions of order 3 in the weakened form (ψ_3(0) = 0). Embedded: the stiff-order-2 two-stage method
#: of the same c_2 (b̂_2 = φ_2(hA)/c_2), which reuses U_2.
EXPRK32 = ExpRKTableau(
    name="exprk32",
    order=3,
    embedded_order=2,
    c=(0.0, 0.5, 2.0 / 3.0),
    a=((), (((2, 2.0 / 3.0, (4.0 / 9.0) / 0.5),),)),
    b=((), ((2, 1.0, 1.5),)),
    b_hat=(((2, 1.0, 2.0),), ()),
    source="Hochbruck & Ostermann 2005 (SINUM 43), 3-stage order 3 with c2 = 1/2, c3 = 2/3; embedded 2-stage "
           "order 2 (b̂2 = φ2/c2)",
)

#: A four-stage method of stiff order 3 in the strong form: the order-3 conditions of Hochbruck & Ostermann
#: (2005, Table 4.1: ψ_1 = ψ_2 = ψ_3 = 0, ψ_{1,i} = 0, Σ_i b_i(Z) J ψ_{2,i}(Z) = 0 for every J) solved with
#: c = (0, 1/2, 1/2, 1), b_2 = 0 and ψ_{2,3} = ψ_{2,4} = 0 (a_32 = ½φ_2(hA/2), a_42 = 2φ_2(hA), a_43 = 0),
#: b_3 = 4φ_2 − 8φ_3, b_4 = 4φ_3 − φ_2 (all at hA). Unlike `exprk32` (ψ_3 = 0 only at Z = 0) it keeps order 3
#: when γhλ_max ≫ 1. Embedded: the order-2 method of U_2 (b̂_2 = 2φ_2(hA)).
EXPRK32S4 = ExpRKTableau(
    name="exprk32s4",
    order=3,
    embedded_order=2,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (((2, 0.5, 0.5),),), (((2, 1.0, 2.0),), ())),
    b=((), ((2, 1.0, 4.0), (3, 1.0, -8.0)), ((3, 1.0, 4.0), (2, 1.0, -1.0))),
    b_hat=(((2, 1.0, 2.0),), (), ()),
    source="Hochbruck & Ostermann 2005 (SINUM 43) stiff order-3 conditions, solved for c = (0, 1/2, 1/2, 1) with "
           "b2 = 0 (coefficients derived in cdflow); embedded 2-stage order 2 (b̂2 = φ2/c2)",
)

EXPRK_METHODS: dict[str, ExpRKTableau] = {t.name: t for t in (EXPRK32, EXPRK32S4, EXPRK21)}


def exprk_tableau(name: str) -> ExpRKTableau:
    """The tableau called `name`, or a ConfigError listing the valid names."""
    if name not in EXPRK_METHODS:
        raise ConfigError(f"unknown exponential method {name!r}; valid: {', '.join(EXPRK_METHODS)}")
    return EXPRK_METHODS[name]
