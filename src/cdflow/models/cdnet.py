"""A general convection–diffusion network whose depth is one continuous solve:

    h = dropout_h(act(W dropout_x(x) + b)),   dz = [ v_θ(z, t) − γ L z ] dt + ς dW   on [0, T],

or with ``encoder="residual"`` the F-wide residual base network of COIN and Diff-ResNet,
h = dropout_h(x + act(W dropout_x(x) + b)) with W F×F. The linear head sits at either end (`propagate`):
``features`` z(0) = h, logits = head(dropout_head(z(T))); ``logits`` ("predict then propagate", as APPNP)
z(0) = head(h) and logits = z(T), so the convection–diffusion acts on the class scores; ``probabilities``
z(0) = softmax(head(h)) and the scores are log max(z(T), ε) renormalised, so that it acts on the base
classifier's output u as in COIN (v_θ = 0 and exact diffusion: COIN's split integrator); the convection of
probabilities is the replicator field v_i = z_i (f_θ,i(z) − Σ_j z_j f_θ,j(z)) (`SimplexVelocity`), so that with a
Laplacian of zero row sums (the GCN form L = diag(Â1) − Â) every node's z stays a probability vector.

Diffusion is chosen by a `DiffusionSpec`: none, graph (in the drift, by explicit steps, by a stable
Lie/Strang split, or by an adaptive exponential integrator), or SDE noise (Feynman–Kac averaged at evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.graph import Laplacian
from cdflow.heat import DiffusionStats, exponential_solve, split_solve
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.models.graph_source import GraphInput, GraphSpec, gather_rows, resolve_graph
from cdflow.models.layers import check_dropouts, dropout, keep_mask
from cdflow.models.wide_residual import ACTIVATIONS as WIDE_ACTIVATIONS
from cdflow.models.wide_residual import WideLinear, WideResidual, chunk_mask
from cdflow.noise import NoiseDiffusion
from cdflow.sde import check_sde, derive_seed, mean_field_spec, sample_paths, solve_sde
from cdflow.solve import solve
from cdflow.solvers import SolverSpec, ode_method
from cdflow.sparse import SparseMatrix
from cdflow.stats import SolveStats, merged
from cdflow.terms import Convection, Drift, GraphDiffusion
from cdflow.velocity import ConcatVelocity, MLPVelocity, SimplexVelocity, make_activation

#: Where the linear head sits: after the solve (features) or before it (logits or their softmax: predict, then
#: propagate).
PROPAGATE = ("features", "logits", "probabilities")
#: The input encoder: one layer of `hidden` units, or the F-wide residual layer h = x + act(Wx + b).
ENCODERS = ("mlp", "residual")
#: The convection's initial output layer: torch's default, or zero (v ≡ 0: the net starts as encoder → diffusion).
CONVECTION_INITS = ("default", "zero")
#: Hidden columns per chunk of the F-wide residual encoder's kernel (COIN's default).
WIDE_CHUNK = 128
#: The clamp of z(T) before the log with propagate='probabilities' (COIN's ε).
PROB_EPS = 1e-8


class ConvectionDiffusionNet(nn.Module):
    """encoder → convection–diffusion solve over [0, T] → linear head; returns log-softmax scores.

    After each call `self.stats` holds the convection solve's `SolveStats` (summed over the split's
    sub-solves) and `self.diffusion_stats` the Laplacian products of explicit/split diffusion.
    """

    sparse_input = True  # takes x as a cdflow.sparse.SparseMatrix

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int = 64,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        solver: SolverSpec | None = None,
        diffusion: DiffusionSpec | None = None,
        graph: GraphSpec | None = None,
        dropout: float = 0.0,
        seed: int = 0,
        encoder_activation: str = "tanh",
        hidden_dropout: float = 0.0,
        time_input: bool = True,
        head_dropout: float = 0.0,
        propagate: Literal["features", "logits", "probabilities"] = "features",
        encoder: Literal["mlp", "residual"] = "mlp",
        convection_init: Literal["default", "zero"] = "default",
    ) -> None:
        super().__init__()
        self.solver = solver or SolverSpec()
        self.diffusion = diffusion or DiffusionSpec()
        check_dropouts("ConvectionDiffusionNet", dropout=dropout, hidden_dropout=hidden_dropout,
                       head_dropout=head_dropout)
        if propagate not in PROPAGATE:
            raise ConfigError(f"ConvectionDiffusionNet propagate={propagate!r} is invalid; valid: "
                              f"{', '.join(PROPAGATE)}")
        if propagate != "features" and head_dropout > 0:
            raise ConfigError("ConvectionDiffusionNet head_dropout acts on z(T) before the head; with "
                              f"propagate={propagate!r} the head comes first (use hidden_dropout for its input)")
        for name, value in (("in_features", in_features), ("num_classes", num_classes), ("hidden", hidden),
                            ("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ConvectionDiffusionNet {name} must be an int ≥ 1, got {value!r}")
        if encoder not in ENCODERS:
            raise ConfigError(f"ConvectionDiffusionNet encoder={encoder!r} is invalid; valid: {', '.join(ENCODERS)}")
        if encoder == "residual" and hidden != in_features:
            raise ConfigError(f"ConvectionDiffusionNet encoder='residual' is F-wide (h = x + act(Wx + b)): hidden must "
                              f"equal in_features ({in_features}), got hidden={hidden}")
        if convection_init not in CONVECTION_INITS:
            raise ConfigError(f"ConvectionDiffusionNet convection_init={convection_init!r} is invalid; valid: "
                              f"{', '.join(CONVECTION_INITS)}")
        self.propagate, self.encoder_kind = propagate, encoder
        self.input_dropout = dropout
        # the residual encoder's F×F weight is stored chunk-major for the F-wide kernel
        self.encoder = WideLinear(in_features, hidden, WIDE_CHUNK) if encoder == "residual" else \
            nn.Linear(in_features, hidden)
        self.encoder_activation = make_activation(encoder_activation)
        self.encoder_activation_name = encoder_activation
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.head_dropout = nn.Dropout(head_dropout)
        state = hidden if propagate == "features" else num_classes  # the dimension the solve acts on
        self.velocity = MLPVelocity(state, width=width, depth=depth, activation=activation, time_input=time_input,
                                     zero_init=convection_init == "zero")
        self.head = nn.Linear(hidden, num_classes)
        self.graph = graph or GraphSpec()
        self.last_graph: str | None = None
        self.graph_term: GraphDiffusion | None = None
        # probabilities are convected on the simplex (replicator dynamics), other states by v itself
        self.field: nn.Module = SimplexVelocity(self.velocity) if propagate == "probabilities" else self.velocity
        self.convection = Drift([Convection(self.field)])
        kind, integ = self.diffusion.kind, self.diffusion.integrator
        if kind == "graph" and integ == "drift":
            self.graph_term = GraphDiffusion(None, self.diffusion.gamma, learnable=self.diffusion.learnable)
            self.drift = Drift([Convection(self.field), self.graph_term])
        else:
            self.drift = self.convection
        if kind == "graph" and integ != "drift" and self.diffusion.learnable:
            raw = torch.log(torch.expm1(torch.tensor(max(self.diffusion.gamma, 1e-6))))
            self.raw_gamma = nn.Parameter(raw)
        self.noise: NoiseDiffusion | None = None
        self.seed = seed
        if kind == "noise":
            self.noise = NoiseDiffusion(self.diffusion.noise_type, self.diffusion.sigma, dim=state,
                                        learnable=self.diffusion.learnable)
            check_sde(self.solver, self.noise.noise_type)
            self.mean_field_solver = mean_field_spec(self.solver)
            self.register_buffer("sde_calls", torch.zeros((), dtype=torch.long))
        self.diffusion.check_solver(self.solver)  # first: settings this diffusion does not use are named as such
        if kind != "noise":
            self.solver.check_ode()
        self.last_uncertainty: Tensor | None = None
        self._stats_parts: list[SolveStats] = []
        self.diffusion_stats: DiffusionStats | None = None

    @property
    def stats(self) -> SolveStats | None:
        """Statistics of the last call, summed over its solves (read after backward for nfe_backward)."""
        return merged(self._stats_parts)

    def gamma(self) -> Tensor | float:
        if hasattr(self, "raw_gamma"):
            return nn.functional.softplus(self.raw_gamma)
        return self.diffusion.gamma

    def encode(self, x: Tensor | SparseMatrix) -> Tensor:
        """z(0): h = dropout_h(act(W dropout_x(x) + b)) (plus x with the residual encoder), then head(h) with
        propagate='logits' or softmax(head(h)) with 'probabilities'; sparse features are multiplied sparsely."""
        if (self.encoder_kind == "residual" and self.propagate != "features" and isinstance(x, SparseMatrix)
                and self.encoder_activation_name in WIDE_ACTIVATIONS):
            logits = self._residual_logits(x)
            return torch.softmax(logits, dim=-1) if self.propagate == "probabilities" else logits
        if isinstance(x, SparseMatrix):
            z = x.mm_stacked_dropout(self.encoder.weight.t()[None], self.input_dropout, self.training)[:, 0]
            z = z + self.encoder.bias
        else:
            z = self.encoder(nn.functional.dropout(x, self.input_dropout, self.training))
        h = self.encoder_activation(z)
        if self.encoder_kind == "residual" and isinstance(x, SparseMatrix):  # + x: one pass over x's non-zeros
            h = h.index_put((x.row_ids(), x.cols), x.vals.detach().to(h.dtype), accumulate=True)
        elif self.encoder_kind == "residual":
            h = h + x
        # keep_mask's draws: 3× faster than nn.Dropout's Bernoulli on CPU (an F-wide h is [N, F])
        h = dropout(h, self.hidden_dropout.p, self.training)
        if self.propagate == "features":
            return h
        logits = self.head(h)
        return torch.softmax(logits, dim=-1) if self.propagate == "probabilities" else logits

    def _residual_logits(self, x: SparseMatrix) -> Tensor:
        """head(dropout_h(x + act(W dropout_x(x) + b))) by the F-wide kernel (`WideResidual`: the [N, F] hidden
        layer one cache-sized column chunk at a time), with the dropout draws of the plain path (x's non-zeros,
        then h) and the same values (the encoder's weight is stored chunk-major: `WideLinear`)."""
        enc = self.encoder
        assert isinstance(enc, WideLinear)
        f, pad, dtype = enc.in_features, enc.padded - enc.in_features, enc.w1.dtype
        w2t = nn.functional.pad(self.head.weight, (0, pad))[None]
        mask = None
        dropped = x
        if self.training and self.input_dropout > 0:
            vals = x.dropout_values(1, self.input_dropout, dtype)[0]  # the draws of the plain path's product
            dropped = x.select(vals != 0, vals)  # the dropped entries leave the F-wide product (5× less at p = 0.8)
        p = self.hidden_dropout.p
        residual = x
        if self.training and p > 0:
            keep_h = keep_mask((x.n_rows, f), p, x.vals.device)
            scale = 1.0 / (1.0 - p)
            mask = chunk_mask(keep_h[None], scale, enc.padded, enc.w1.shape[3], dtype)
            kept = keep_h[x.row_ids(), x.cols]  # the mask on x's non-zeros: the residual x ⊙ m
            residual = x.with_values(x.vals.detach().to(dtype) * kept * scale)
        act = self.encoder_activation_name
        hidden = WideResidual.apply(enc.w1, enc.b1, w2t, dropped, False, None, None, mask, act)[:, 0]
        return residual.mm(self.head.weight.t()) + hidden + self.head.bias

    def readout(self, z: Tensor) -> Tensor:
        """Class scores of the final state: head(dropout_head(z(T))), z(T) itself with propagate='logits', or
        log max(z(T), ε) with 'probabilities' (renormalised by the log-softmax that follows)."""
        if self.propagate == "features":
            return self.head(self.head_dropout(z))
        return torch.log(z.clamp_min(PROB_EPS)) if self.propagate == "probabilities" else z

    def forward(self, x: Tensor | SparseMatrix, graph: GraphInput = None) -> Tensor:
        if isinstance(x, Tensor) and x.dim() > 2:
            x = x.reshape(x.shape[0], -1)
        z = self.encode(x)
        kind, integ = self.diffusion.kind, self.diffusion.integrator
        if kind == "noise":
            return self._noisy(z)
        own = None
        if kind == "graph" and self.graph.gather:  # DDP: diffuse over the global batch
            (x, z), own = gather_rows(x, z)
        if kind == "none" or integ == "drift":
            if self.graph_term is not None:
                self.graph_term.set_laplacian(self._laplacian(x, graph, z))
            sol = solve(self.drift, z, self.solver)
            z, self._stats_parts = sol.y_final, [sol.stats]
        elif integ == "exponential":
            z = self._exponential(z, self._laplacian(x, graph, z))
        else:
            z = self._split(z, self._laplacian(x, graph, z))
        out = torch.log_softmax(self.readout(z), dim=-1)
        return out if own is None else out[own]

    def _laplacian(self, x: Tensor | SparseMatrix, graph: GraphInput, z: Tensor) -> Laplacian:
        lap = resolve_graph(self.graph, x, graph, z.dtype)
        self.last_graph = lap.describe()
        return lap

    def _noisy(self, z: Tensor) -> Tensor:
        """Training: one path per call. Evaluation: Feynman–Kac u(x) = E softmax(head(X_T)) over n_samples
        paths (or the mean-field ODE with `diffusion.mean_field`); the per-sample std of the class
        probabilities across paths is kept in `last_uncertainty`."""
        self.last_uncertainty = None
        if self.training:
            entropy = derive_seed(self.seed, 0, int(self.sde_calls))
            self.sde_calls += 1
            sol = solve_sde(self.convection, self.noise, z, self.solver, seed=entropy)
            self._stats_parts = [sol.stats]
            return torch.log_softmax(self.readout(sol.y_final), dim=-1)
        if self.diffusion.mean_field:
            sol = solve(self.convection, z, self.mean_field_solver)
            self._stats_parts = [sol.stats]
            return torch.log_softmax(self.readout(sol.y_final), dim=-1)
        ys, stats = sample_paths(self.convection, self.noise, z, self.solver, self.diffusion.n_samples,
                                 seed=derive_seed(self.seed, 1))
        self._stats_parts = [stats]
        probs = torch.softmax(self.readout(ys[-1]), dim=-1)  # [n_samples, B, C]
        if probs.shape[0] > 1:
            self.last_uncertainty = probs.std(dim=0)
        return torch.log(probs.mean(dim=0).clamp_min(1e-12))

    def _exponential(self, z: Tensor, lap: Laplacian) -> Tensor:
        """dz/dt = v_θ(z, t) − γLz by the exponential pair, under the solver's rtol/atol (step_size: first
        step), max_steps and adjoint (``backsolve``: the exponential adjoint, with adjoint_rtol/atol, seminorm)."""
        spec = self.solver
        sol = exponential_solve(
            self.field, z, lap, self.gamma(), 0.0, spec.t1, method=self.diffusion.exp_method, rtol=spec.rtol,
            atol=spec.atol, step_size=spec.step_size, adjoint=spec.adjoint == "backsolve",
            adjoint_rtol=spec.adjoint_rtol, adjoint_atol=spec.adjoint_atol, seminorm=spec.seminorm,
            max_steps=spec.max_steps,
        )
        self._stats_parts, self.diffusion_stats = [sol.stats], sol.diffusion
        return sol.y

    def _split(self, z: Tensor, lap: Laplacian, convection: Drift | None = None) -> Tensor:
        """Lie/Strang splitting of dz/dt = v(z) − γLz (`convection`: the convection drift, this net's by default;
        the joint solve of `forward_members` passes its members' side by side)."""
        spec, diff = self.solver, self.diffusion
        drift = self.convection if convection is None else convection
        parts: list[SolveStats] = []

        def convect(x: Tensor, ta: float, tb: float) -> Tensor:
            sol = solve(drift, x, spec, ts=torch.tensor([ta, tb], dtype=x.dtype, device=x.device))
            parts.append(sol.stats)
            return sol.y_final

        method = "explicit" if diff.integrator == "explicit" else diff.method
        scheme = "lie" if diff.integrator == "explicit" else diff.scheme
        z, self.diffusion_stats = split_solve(convect, z, lap, self.gamma(), 0.0, spec.t1, diff.n_steps,
                                              scheme=scheme, diffusion=method)
        self._stats_parts = parts
        return z

    @staticmethod
    def joint_refusal(models: Sequence[nn.Module]) -> str | None:
        """Why `models` (the members of one `Members` stack) cannot share one solve; None when they can.

        They can when the solve acts on each state column alone with steps that do not depend on the state:
        graph diffusion by explicit steps or a split with Chebyshev or explicit sub-steps (Krylov chooses its
        dimension and implicit steps their CG iterations from the state), fixed-step convection, a fixed γ, the
        same settings."""
        if not models:
            return "no members"
        first = models[0]
        if not all(type(m) is ConvectionDiffusionNet for m in models):
            return "the members are not all ConvectionDiffusionNet"
        assert isinstance(first, ConvectionDiffusionNet)
        diff, spec = first.diffusion, first.solver
        if diff.kind != "graph":
            return f"diffusion kind={diff.kind!r} (a shared solve needs graph diffusion, split or explicit)"
        if diff.integrator not in ("split", "explicit"):
            return f"graph diffusion integrator={diff.integrator!r} (a shared solve needs split or explicit)"
        if diff.integrator == "split" and diff.method == "krylov":
            return "Krylov diffusion steps adapt their dimension to the state"
        if diff.integrator == "split" and diff.method == "implicit":
            return "implicit diffusion steps stop their CG iterations on the state's residual"
        if diff.learnable:
            return "a learnable γ differs between members"
        adjoint_method = spec.adjoint_method or spec.method
        if ode_method(spec.method).adaptive or (spec.adjoint == "backsolve" and ode_method(adjoint_method).adaptive):
            return f"the adaptive {spec.method!r} would choose one step size for all members"
        if first.graph.gather:
            return "graph.gather diffuses over the gathered global batch"
        for m in models[1:]:
            assert isinstance(m, ConvectionDiffusionNet)
            if (m.solver, m.diffusion, m.graph, m.propagate) != (spec, diff, first.graph, first.propagate):
                return "the members' settings differ"
        return None

    @staticmethod
    def forward_members(models: Sequence[ConvectionDiffusionNet], x: Tensor | SparseMatrix,
                        graph: GraphInput = None, active: Sequence[int] | None = None
                        ) -> tuple[Tensor, list[SolveStats], DiffusionStats | None]:
        """Members k = 0..K−1 (`joint_refusal` is None) through one solve: each encodes x (its own dropout
        draws, in member order), the states z_k sit side by side as the columns of one [N, Σ d_k] state, and
        one split solve advances them all: one Laplacian product per step for all members, and the convection
        ConcatVelocity applies v_k to the columns of member k. Members never mix (L acts on each column alone,
        the steps do not depend on the state), so member k's output equals its own forward. Members not in
        `active` run without gradients. Returns the [N, K, C] log-scores, the solve's stats (its sub-solves'
        objects, which the backward goes on counting into: merge them when read) and the diffusion's."""
        first = models[0]
        if isinstance(x, Tensor) and x.dim() > 2:
            x = x.reshape(x.shape[0], -1)
        live = set(range(len(models))) if active is None else set(active)
        zs = []
        for k, m in enumerate(models):
            with nullcontext() if k in live else torch.no_grad():
                zs.append(m.encode(x))
        lap = first._laplacian(x, graph, zs[0])
        velocity = ConcatVelocity([m.field for m in models], [z.shape[-1] for z in zs],
                                  frozen=[k for k in range(len(models)) if k not in live])
        z = first._split(torch.cat(zs, dim=-1), lap, Drift([Convection(velocity)]))
        outs = [torch.log_softmax(m.readout(zk), dim=-1) for m, zk in zip(models, z.split(velocity.sizes, dim=-1))]
        out = torch.stack([o if k in live else o.detach() for k, o in enumerate(outs)], dim=1)
        parts, diffusion = first._stats_parts, first.diffusion_stats
        for m in models:  # the joint solve's counters are the caller's (`Members.stats`), not the first member's
            m._stats_parts, m.diffusion_stats = [], None
        return out, parts, diffusion
