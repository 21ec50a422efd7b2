"""Exact solution of linear PK models under piecewise-constant input, batched over patients.

Between two consecutive event or output times the input rate R is constant, so the state moves
exactly as ``x(t+Δ) = Φ(Δ)·x(t) + Γ(Δ)·R`` with ``Φ = exp(A·Δ)`` and ``Γ = ∫₀^Δ exp(A·s)·b ds``.
Both come from one matrix exponential of the augmented matrix ``[[A, b], [0, 0]]·Δ`` (Van Loan),
which needs no eigenvalue case analysis: repeated roots (ke0 equal to a disposition rate
constant, say) are handled as well as distinct ones. There is one exponential per distinct
interval length and patient, computed for all patients at once. Boluses add to A1 at their time.

Two exact ways of stepping the state through the time grid, chosen by batch size:

* **Few patients** (``n <= _POWERS_MAX``): within a run of equal steps at a constant rate the
  states are ``E^j·[x; R]`` with ``E = [[Φ, Γ], [0, 1]]``. The powers ``E^1..E^m`` come from
  ``log2(m)`` batched matrix products (doubling), so a whole run costs a few NumPy calls instead
  of one per output time.
* **Many patients**: a time loop vectorised over patients, in *modal* coordinates for the
  parent compartments. A mammillary system is similar to a symmetric matrix
  (``D⁻¹·A·D`` with ``D = diag(√Vᵢ)``), so its eigenvectors are orthogonal and the modal
  transform is perfectly conditioned whatever the eigenvalues: each step is ``z ← e^{λΔ}·z + c``,
  one multiply-add per mode. The effect site and the metabolite are not diagonalised (that is
  where near-equal rate constants would make eigenvectors ill-conditioned); they are advanced
  with their rows of the exact ``Φ`` and ``Γ``, rewritten in modal coordinates. Nothing is
  approximated, and no case needs a fallback.

Large batches run in chunks (bounded memory). With ``workers > 1`` chunks run in worker
processes: the per-step array operations are short, so threads would spend their time queueing
for the GIL rather than computing. Workers start from a fork server (spawn where there is
none), not by forking the caller: forking a process that runs threads (a web server, a Dask
worker) can deadlock, and a forked child would also inherit and count the caller's memory.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from ketaflow.errors import InputError
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import BatchSchedule, Schedule
from ketaflow.units import MIN_PER_H, NG_PER_ML_PER_MG_PER_L

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
T = TypeVar("T")

#: Patients per chunk for large batches. One chunk's working set (state, per-mode factors and
#: couplings, a few (k, n) arrays) stays in the L2/L3 cache while the per-step Python overhead
#: (a handful of NumPy calls) is spread over many patients; measured best on the project's
#: 2-core machine between 8k and 16k patients (benchmarks/bench_engine.py).
DEFAULT_CHUNK = 16384
#: Up to this many patients the "powers" stepping is used; above it the modal time loop.
#: Crossover measured with benchmarks/bench_engine.py.
_POWERS_MAX = 24
#: Step lengths that differ by less than this relative amount share one transition matrix.
#: Floating-point differences of grid times that should be equal (10 s at t = 24 h, say) differ
#: by up to ~1e-12 relative; the shared step is their mean, so there is no systematic drift.
_DT_RTOL = 1e-11


# Padé-13 coefficients and the 1-norm bound θ13 of Higham (2005), "The scaling and squaring
# method for the matrix exponential revisited", SIAM J Matrix Anal Appl 26:1179-1193.
_PADE13 = (
    64764752532480000.0,
    32382376266240000.0,
    7771770303897600.0,
    1187353796428800.0,
    129060195264000.0,
    10559470521600.0,
    670442572800.0,
    33522128640.0,
    1323241920.0,
    40840800.0,
    960960.0,
    16380.0,
    182.0,
    1.0,
)
_THETA13 = 5.371920351148152
# Lower-degree approximants and the 1-norm bounds up to which each has backward error below the
# unit roundoff (Higham 2005, Table 2.3): degree -> (θ_m, coefficients b_0..b_m).
_PADE_LOW = (
    (3, 1.495585217958292e-2, (120.0, 60.0, 12.0, 1.0)),
    (5, 2.539398330063230e-1, (30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0)),
    (
        7,
        9.504178996162932e-1,
        (17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0),
    ),
    (
        9,
        2.097847961257068e0,
        (
            17643225600.0,
            8821612800.0,
            2075673600.0,
            302702400.0,
            30270240.0,
            2162160.0,
            110880.0,
            3960.0,
            90.0,
            1.0,
        ),
    ),
)


def _solve_dominant(a: FloatArray, b: FloatArray) -> FloatArray:
    """Solve ``a @ x = b`` for a batch (N, k, k) of column diagonally dominant matrices.

    Gaussian elimination without pivoting, vectorised over the batch: stable for such matrices
    (growth factor at most 2). The work is done in (k, k, N) layout so that every operation runs
    over contiguous patient rows; for small k this is several times faster than LAPACK's
    one-call-per-matrix loop.
    """
    at = np.ascontiguousarray(a.transpose(1, 2, 0))
    bt = np.ascontiguousarray(b.transpose(1, 2, 0))
    k = at.shape[0]
    for p in range(k - 1):
        f = at[p + 1 :, p] / at[p, p]  # (k-p-1, N)
        at[p + 1 :, p + 1 :] -= f[:, None] * at[p, p + 1 :][None]
        bt[p + 1 :] -= f[:, None] * bt[p][None]
    for p in range(k - 1, -1, -1):
        if p + 1 < k:
            bt[p] -= np.einsum("jn,jmn->mn", at[p, p + 1 :], bt[p + 1 :])
        bt[p] /= at[p, p]
    return np.ascontiguousarray(bt.transpose(2, 0, 1))


def _pade_low(x: FloatArray, b: tuple[float, ...]) -> FloatArray:
    """Padé approximant r_m(x) of odd degree m = len(b) - 1 <= 9, batched."""
    eye = np.eye(x.shape[1])
    x2 = x @ x
    powers = [eye, x2]
    for _ in range(2, len(b) // 2):
        powers.append(powers[-1] @ x2)
    u_even = sum(b[2 * j + 1] * powers[j] for j in range(len(powers)))
    v = sum(b[2 * j] * powers[j] for j in range(len(powers)))
    u = x @ u_even
    if len(b) <= 8:
        # Degree <= 7 with ||x||_1 <= θ_m: v - u = b0·(I + F) with ||F||_1 < 0.6, so the
        # denominator is column diagonally dominant and needs no pivoting.
        return _solve_dominant(v - u, v + u)
    return np.asarray(np.linalg.solve(v - u, v + u), dtype=np.float64)


def expm_batch(a: FloatArray) -> FloatArray:
    """Matrix exponential of every matrix in ``a`` (shape (N, m, m)), all at once.

    The scaling-and-squaring method of Higham (2005), the one SciPy uses for a single matrix,
    vectorised over the batch. When every matrix has a 1-norm below θ_m for m = 3, 5, 7 or 9,
    the [m/m] Padé approximant is used without scaling (short PK steps are in this case);
    otherwise [13/13] with a scaling power per matrix, so a small matrix is not over-scaled
    because a large one shares its batch.
    """
    m = a.shape[1]
    norm = np.abs(a).sum(axis=1).max(axis=1)
    top = float(norm.max(initial=0.0))
    for _, theta, coeffs in _PADE_LOW:
        if top <= theta:
            return _pade_low(a, coeffs)
    with np.errstate(divide="ignore"):
        s = np.where(norm > _THETA13, np.ceil(np.log2(norm / _THETA13)), 0.0).astype(np.int64)
    x = a / np.exp2(s)[:, None, None]
    b = _PADE13
    eye = np.eye(m)
    x2 = x @ x
    x4 = x2 @ x2
    x6 = x4 @ x2
    u = x @ (
        x6 @ (b[13] * x6 + b[11] * x4 + b[9] * x2) + b[7] * x6 + b[5] * x4 + b[3] * x2 + b[1] * eye
    )
    v = x6 @ (b[12] * x6 + b[10] * x4 + b[8] * x2) + b[6] * x6 + b[4] * x4 + b[2] * x2 + b[0] * eye
    r = np.linalg.solve(v - u, v + u)
    for k in range(int(s.max(initial=0))):
        sel = s > k
        r[sel] = r[sel] @ r[sel]
    return np.asarray(r, dtype=np.float64)


def _augmented_exp(params: PKParameters, dt_min: float | FloatArray) -> FloatArray:
    """``E = expm([[A, b], [0, 0]]·Δ) = [[Φ, Γ], [0, 1]]``, shape (N, k+1, k+1)."""
    a = params.system_matrix()
    n, k, _ = a.shape
    aug = np.zeros((n, k + 1, k + 1))
    aug[:, :k, :k] = a
    aug[:, 0, k] = 1.0  # the infusion enters the central compartment
    dt = np.asarray(dt_min, dtype=np.float64)
    if dt.ndim == 0:
        aug *= dt
    else:
        aug *= dt.reshape(-1, 1, 1)
    return expm_batch(aug)


def discretize(params: PKParameters, dt_min: float | FloatArray) -> tuple[FloatArray, FloatArray]:
    """Exact one-step transition for constant input over ``dt_min``.

    Returns ``(Phi, Gamma)`` with shapes (N, k, k) and (N, k): the state after ``dt_min`` is
    ``Phi @ x + Gamma * rate_mg_per_min``.
    """
    e = _augmented_exp(params, dt_min)
    k = e.shape[1] - 1
    return e[:, :k, :k], e[:, :k, k]


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predicted concentrations for N patients at T output times.

    Arrays are (N, T). Concentrations are stored in mg/L (internal); the ``*_ng_per_ml``
    properties give the public unit. The rates are computed from ``schedule`` when asked for
    (an (N, T) rate array would cost as much memory as a concentration array).
    """

    times_min: FloatArray
    cp_mg_per_l: FloatArray
    ce_mg_per_l: FloatArray | None
    cm_mg_per_l: FloatArray | None
    schedule: BatchSchedule
    state_final: FloatArray

    @property
    def cp_ng_per_ml(self) -> FloatArray:
        """Plasma concentration, ng/mL."""
        return self.cp_mg_per_l * NG_PER_ML_PER_MG_PER_L

    @property
    def ce_ng_per_ml(self) -> FloatArray | None:
        """Effect-site concentration, ng/mL (None if the model has no effect site)."""
        return None if self.ce_mg_per_l is None else self.ce_mg_per_l * NG_PER_ML_PER_MG_PER_L

    @property
    def cm_ng_per_ml(self) -> FloatArray | None:
        """Metabolite plasma concentration, ng/mL (None without a metabolite model)."""
        return None if self.cm_mg_per_l is None else self.cm_mg_per_l * NG_PER_ML_PER_MG_PER_L

    @property
    def rate_mg_per_min(self) -> FloatArray:
        """Infusion rate holding from each output time onward, mg/min, shape (N, T)."""
        return self.schedule.rate_mg_per_min_at(self.times_min)

    @property
    def rate_mg_per_h(self) -> FloatArray:
        """Infusion rate holding from each output time onward, mg/h, shape (N, T)."""
        return self.rate_mg_per_min * MIN_PER_H


# --- the time grid ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """The union of output and event times, and what happens on each step between them."""

    n_grid: int
    out_first: IntArray  # (G,) first output column at each grid point, -1 if none
    duplicates: tuple[tuple[int, int], ...]  # (column, column it copies): repeated times
    step_dt: IntArray  # (G-1,) index into unique_dt
    unique_dt: FloatArray
    step_seg: IntArray  # (G-1,) infusion segment (column of the rates), -1 = no infusion
    bolus_at: dict[int, FloatArray]  # grid index -> (N,) mg given there


def _plan(schedule: BatchSchedule, times_min: FloatArray) -> _Plan:
    t_end = float(times_min[-1])
    bps = schedule.breakpoints_min
    events = np.concatenate([bps, schedule.bolus_times_min])
    grid = np.unique(np.concatenate([[0.0], times_min, events[events <= t_end]]))
    n_grid = len(grid)
    out_idx = np.searchsorted(grid, times_min)
    out_first = np.full(n_grid, -1, dtype=np.intp)
    cols = np.arange(len(times_min))
    # Output times are sorted, so repeated times are adjacent: the first of each group is kept.
    first = np.concatenate([[True], np.diff(out_idx) != 0])
    out_first[out_idx[first]] = cols[first]
    duplicates = [(int(c), int(out_first[out_idx[c]])) for c in cols[~first]]
    unique_dt, step_dt = _group_steps(np.diff(grid))
    if len(bps) >= 2:
        seg = np.searchsorted(bps, grid[:-1], side="right") - 1
        seg[(seg < 0) | (seg >= len(bps) - 1)] = -1
    else:
        seg = np.full(n_grid - 1, -1, dtype=np.intp)
    bolus_at: dict[int, FloatArray] = {}
    for b, gi in enumerate(np.searchsorted(grid, schedule.bolus_times_min)):
        if gi < n_grid:
            bolus_at[int(gi)] = bolus_at.get(int(gi), 0.0) + schedule.bolus_mg[:, b]
    return _Plan(
        n_grid=n_grid,
        out_first=out_first,
        duplicates=tuple(duplicates),
        step_dt=np.asarray(step_dt, dtype=np.intp).reshape(-1),
        unique_dt=np.asarray(unique_dt, dtype=np.float64),
        step_seg=np.asarray(seg, dtype=np.intp),
        bolus_at=bolus_at,
    )


def _group_steps(dts: FloatArray) -> tuple[FloatArray, IntArray]:
    """Distinct step lengths (each the mean of its group) and each step's group index."""
    if dts.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.intp)
    order = np.argsort(dts, kind="stable")
    ordered = dts[order]
    new = np.concatenate([[True], np.diff(ordered) > _DT_RTOL * ordered[1:]])
    group = np.cumsum(new) - 1
    counts = np.bincount(group)
    unique = np.bincount(group, weights=ordered) / counts
    step = np.empty(dts.size, dtype=np.intp)
    step[order] = group
    return np.asarray(unique, dtype=np.float64), step


@dataclass(frozen=True, slots=True)
class _Outputs:
    """Output buffers laid out (T, n): each time point is one contiguous row."""

    cp: FloatArray
    ce: FloatArray | None
    cm: FloatArray | None

    def finish(self, plan: _Plan) -> None:
        for col, src in plan.duplicates:
            self.cp[col] = self.cp[src]
            if self.ce is not None:
                self.ce[col] = self.ce[src]
            if self.cm is not None:
                self.cm[col] = self.cm[src]


def _rate(schedule: BatchSchedule, seg: int) -> FloatArray:
    if seg < 0:
        return np.zeros(schedule.n_patients)
    return np.ascontiguousarray(schedule.rates_mg_per_min[:, seg])


# --- few patients: powers of the augmented transition ----------------------------------------


def _runs(plan: _Plan) -> list[tuple[int, int, int, int]]:
    """Maximal runs (start grid index, length, dt index, segment) of identical steps.

    A run never crosses a bolus: a bolus at grid index g starts a new run at g.
    """
    n_steps = plan.n_grid - 1
    if n_steps == 0:
        return []
    change = np.zeros(n_steps, dtype=bool)
    change[0] = True
    change[1:] = (np.diff(plan.step_dt) != 0) | (np.diff(plan.step_seg) != 0)
    for g in plan.bolus_at:
        if 0 < g < n_steps:
            change[g] = True
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n_steps)
    return [
        (int(a), int(b - a), int(plan.step_dt[a]), int(plan.step_seg[a]))
        for a, b in zip(starts, ends, strict=True)
    ]


def _powers(e: FloatArray, length: int) -> FloatArray:
    """``E^0 .. E^length`` (shape (length+1, N, K, K)) by doubling: log2(length) products."""
    n, kk, _ = e.shape
    pw = np.empty((length + 1, n, kk, kk))
    pw[0] = np.eye(kk)
    pw[1] = e
    filled = 1
    while filled < length:
        take = min(filled, length - filled)
        np.matmul(pw[filled][None], pw[1 : take + 1], out=pw[filled + 1 : filled + take + 1])
        filled += take
    return pw


def _run_powers(
    params: PKParameters,
    schedule: BatchSchedule,
    plan: _Plan,
    trans: list[FloatArray],
    x0: FloatArray,
    out: _Outputs,
) -> FloatArray:
    names = params.state_names()
    k = len(names)
    rows = [0]
    scale = [1.0 / params.v1_l]
    if out.ce is not None:
        rows.append(names.index("Ce"))
        scale.append(np.ones(params.n_patients))
    if out.cm is not None and params.metabolite is not None:
        rows.append(names.index("M1"))
        scale.append(1.0 / params.metabolite.v1_l)
    scales = np.stack(scale, axis=1)  # (N, n_out)
    targets = [a for a in (out.cp, out.ce, out.cm) if a is not None]

    def record(gi: int, y: FloatArray) -> None:
        col = plan.out_first[gi]
        if col >= 0:
            for j, arr in enumerate(targets):
                arr[col] = y[:, j]

    def record_run(g0: int, y: FloatArray) -> None:
        """States y (m, N, n_out) at grid points g0+1 .. g0+m."""
        cols = plan.out_first[g0 + 1 : g0 + 1 + y.shape[0]]
        hit = cols >= 0
        for j, arr in enumerate(targets):
            arr[cols[hit]] = y[hit, :, j]

    runs = _runs(plan)
    longest: dict[int, int] = {}
    for _, m, u, _ in runs:
        longest[u] = max(longest.get(u, 0), m)
    pws = {u: _powers(trans[u], m) for u, m in longest.items()}
    x = np.zeros((params.n_patients, k + 1))
    x[:, :k] = x0
    for g0, m, u, seg in runs:
        if g0 in plan.bolus_at:
            x[:, 0] += plan.bolus_at[g0]
        record(g0, x[:, rows] * scales)
        x[:, k] = _rate(schedule, seg)
        pw = pws[u]
        y = np.einsum("jnok,nk->jno", pw[1 : m + 1][:, :, rows, :], x) * scales
        record_run(g0, y)
        x = np.einsum("nik,nk->ni", pw[m], x)
    last = plan.n_grid - 1
    if last in plan.bolus_at:
        x[:, 0] += plan.bolus_at[last]
    record(last, x[:, rows] * scales)
    return np.asarray(x[:, :k])


# --- many patients: modal time loop -----------------------------------------------------------


def _parent_modes(params: PKParameters) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Eigenvalues (N, n) and eigenvector matrices V, V⁻¹ (N, n, n) of the parent block.

    ``A = V·diag(λ)·V⁻¹`` with ``V = D·U``, ``V⁻¹ = Uᵀ·D⁻¹``, ``D = diag(√Vᵢ)`` and ``U`` the
    orthonormal eigenvectors of the symmetric matrix ``D⁻¹·A·D`` (detailed balance:
    ``k12·V1 = k21·V2 = Q2``). No matrix is inverted.
    """
    n = params.n_compartments
    a = params.system_matrix()[:, :n, :n]
    if n == 1:
        ones = np.ones((params.n_patients, 1, 1))
        return a[:, :, 0].copy(), ones, ones.copy()
    v1 = params.v1_l
    vols = [v1, v1 * params.k12_per_min / params.k21_per_min]
    if n == 3:
        vols.append(v1 * params.k13_per_min / params.k31_per_min)
    d = np.sqrt(np.stack(vols, axis=1))  # (N, n)
    s = a * d[:, None, :] / d[:, :, None]
    s = 0.5 * (s + s.transpose(0, 2, 1))
    lam, u = np.linalg.eigh(s)
    return lam, d[:, :, None] * u, u.transpose(0, 2, 1) / d[:, None, :]


def _run_modal(
    params: PKParameters,
    schedule: BatchSchedule,
    plan: _Plan,
    trans: list[FloatArray],
    x0: FloatArray,
    out: _Outputs,
) -> FloatArray:
    names = params.state_names()
    k = len(names)
    npt_ = params.n_patients
    nc = params.n_compartments
    nd = k - nc  # downstream states: Ce, M1, M2
    lam, vec, inv = _parent_modes(params)

    # Per step length u: modal decay factors p (nc, N), modal unit-rate response g (nc, N) and,
    # for each downstream state, its coupling row over [z, downstream, R] (nd, k+1, N).
    p_u, g_u, c_u = [], [], []
    for u, dt in enumerate(plan.unique_dt):
        e = trans[u]
        p_u.append(np.ascontiguousarray(np.exp(lam * dt).T))
        g_u.append(np.ascontiguousarray(np.einsum("nij,nj->in", inv, e[:, :nc, k])))
        coup = np.empty((nd, k + 1, npt_))
        for d in range(nd):
            row = nc + d
            coup[d, :nc] = np.einsum("nj,nji->in", e[:, row, :nc], vec)
            coup[d, nc:] = e[:, row, nc:].T
        c_u.append(coup)
    w_cp = np.ascontiguousarray((vec[:, 0, :] / params.v1_l[:, None]).T)  # (nc, N)
    bolus_modal = np.ascontiguousarray(inv[:, :, 0].T)  # (nc, N): modal image of 1 mg in A1
    i_ce = names.index("Ce") - nc if out.ce is not None else -1
    i_m1 = names.index("M1") - nc if out.cm is not None else -1
    vm = params.metabolite.v1_l if params.metabolite is not None else None

    xa = np.empty((k + 1, npt_))
    xa[:nc] = np.einsum("nij,nj->in", inv, x0[:, :nc])
    xa[nc:k] = x0[:, nc:].T
    xb = np.empty_like(xa)
    za, zb = xa[:nc], xb[:nc]
    forced: dict[tuple[int, int], FloatArray] = {}  # (u, seg) -> g * R
    cur_seg = -2
    rate = np.zeros(npt_)
    n_steps = plan.n_grid - 1
    for s in range(plan.n_grid):
        if s in plan.bolus_at:
            za += bolus_modal * plan.bolus_at[s]
        col = plan.out_first[s]
        if col >= 0:
            np.einsum("kn,kn->n", w_cp, za, out=out.cp[col], casting="unsafe")
            if out.ce is not None:
                out.ce[col] = xa[nc + i_ce]
            if out.cm is not None and vm is not None:
                np.divide(xa[nc + i_m1], vm, out=out.cm[col])
        if s == n_steps:
            break
        u = plan.step_dt[s]
        seg = plan.step_seg[s]
        if seg != cur_seg:
            cur_seg = seg
            rate = _rate(schedule, seg)
            xa[k] = rate
            xb[k] = rate
        coup = c_u[u]
        # Without an infusion the rate row is zero: leave it out of the contraction.
        width = k + 1 if seg >= 0 else k
        for d in range(nd):
            np.einsum("kn,kn->n", coup[d, :width], xa[:width], out=xb[nc + d])
        np.multiply(za, p_u[u], out=zb)
        if seg >= 0:
            key = (int(u), int(seg))
            f = forced.get(key)
            if f is None:
                f = forced[key] = g_u[u] * rate
            zb += f
        xa, xb = xb, xa
        za, zb = zb, za
    final = np.empty((npt_, k))
    final[:, :nc] = np.einsum("nij,jn->ni", vec, za)
    final[:, nc:] = xa[nc:k].T
    return final


# --- driver -----------------------------------------------------------------------------------


def _solve_chunk(
    params: PKParameters,
    schedule: BatchSchedule,
    times_min: FloatArray,
    initial_state: FloatArray | None,
    out: _Outputs,
) -> FloatArray:
    """Fill ``out`` (rows = output times) and return the final state (N, k)."""
    plan = _plan(schedule, times_min)
    k = len(params.state_names())
    x0 = (
        np.zeros((params.n_patients, k))
        if initial_state is None
        else np.asarray(initial_state, dtype=np.float64)
    )
    trans = [_augmented_exp(params, float(dt)) for dt in plan.unique_dt]
    if params.n_patients <= _POWERS_MAX:
        final = _run_powers(params, schedule, plan, trans, x0, out)
    else:
        final = _run_modal(params, schedule, plan, trans, x0, out)
    out.finish(plan)
    return final


def _new_outputs(params: PKParameters, n_times: int, dtype: npt.DTypeLike) -> _Outputs:
    n = params.n_patients
    return _Outputs(
        cp=np.empty((n_times, n), dtype=dtype),
        ce=np.empty((n_times, n), dtype=dtype) if params.has_effect_site else None,
        cm=np.empty((n_times, n), dtype=dtype) if params.metabolite is not None else None,
    )


def _prediction(
    t: FloatArray, out: _Outputs, schedule: BatchSchedule, final: FloatArray
) -> Prediction:
    # Transposed views, not copies: copying would cost as much as the solve itself.
    return Prediction(
        times_min=t,
        cp_mg_per_l=out.cp.T,
        ce_mg_per_l=None if out.ce is None else out.ce.T,
        cm_mg_per_l=None if out.cm is None else out.cm.T,
        schedule=schedule,
        state_final=final,
    )


def _check_times(times_min: npt.ArrayLike) -> FloatArray:
    t = np.atleast_1d(np.asarray(times_min, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise InputError("times_min must be a non-empty 1-D array of minutes", field="times")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise InputError("times_min must be finite and >= 0", field="times")
    if np.any(np.diff(t) < 0):
        raise InputError("times_min must be sorted in increasing order", field="times")
    return t


def _as_batch(schedule: BatchSchedule | Schedule, n: int) -> BatchSchedule:
    batch = schedule.to_batch(1) if isinstance(schedule, Schedule) else schedule
    if batch.n_patients == 1 and n > 1:
        batch = BatchSchedule(
            batch.breakpoints_min,
            np.repeat(batch.rates_mg_per_min, n, axis=0),
            batch.bolus_times_min,
            np.repeat(batch.bolus_mg, n, axis=0),
        )
    if batch.n_patients != n:
        raise InputError(
            f"schedule has {batch.n_patients} patients but parameters have {n}", field="schedule"
        )
    return batch


def _slice_batch(batch: BatchSchedule, sl: slice) -> BatchSchedule:
    return BatchSchedule(
        batch.breakpoints_min,
        batch.rates_mg_per_min[sl],
        batch.bolus_times_min,
        batch.bolus_mg[sl],
    )


def _chunk_job(
    params: PKParameters,
    batch: BatchSchedule,
    t: FloatArray,
    sl: slice,
    reduce: Callable[[slice, Prediction], T],
    dtype: npt.DTypeLike,
) -> T:
    return _global_chunk_job(params.take(sl), _slice_batch(batch, sl), t, sl, reduce, dtype)


def iter_chunks(
    params: PKParameters,
    schedule: BatchSchedule | Schedule,
    times_min: npt.ArrayLike,
    *,
    reduce: Callable[[slice, Prediction], T],
    chunk_size: int = DEFAULT_CHUNK,
    workers: int = 1,
    dtype: npt.DTypeLike = np.float64,
) -> Iterator[T]:
    """Simulate in chunks of ``chunk_size`` patients and yield ``reduce(rows, prediction)``.

    Memory stays bounded by a few chunks whatever N is; ``reduce`` keeps only what the caller
    needs (peaks, percentiles, ...). Results come back in patient order; ``rows`` is the slice
    of the patients in ``params``. With ``workers > 1`` chunks run in that many processes
    (``reduce`` must then be picklable: a module-level function). ``dtype`` (e.g. float32)
    applies to the stored outputs only; the computation is always float64.
    """
    t = _check_times(times_min)
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}", field="chunk_size")
    n = params.n_patients
    batch = _as_batch(schedule, n)
    slices = [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
    if workers <= 1 or len(slices) == 1:
        for sl in slices:
            yield _chunk_job(params, batch, t, sl, reduce, dtype)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["ketaflow.pk.solve"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        # Bounded look-ahead: at most two chunks per worker are in flight at once. Each job
        # gets only its own patients (and reports them with their global slice).
        pending = []
        for sl in slices:
            pending.append(
                pool.submit(
                    _global_chunk_job,
                    params.take(sl),
                    _slice_batch(batch, sl),
                    t,
                    sl,
                    reduce,
                    dtype,
                )
            )
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def _global_chunk_job(
    sub: PKParameters,
    sub_batch: BatchSchedule,
    t: FloatArray,
    sl: slice,
    reduce: Callable[[slice, Prediction], T],
    dtype: npt.DTypeLike,
) -> T:
    out = _new_outputs(sub, len(t), dtype)
    final = _solve_chunk(sub, sub_batch, t, None, out)
    return reduce(sl, _prediction(t, out, sub_batch, final))


def simulate(
    params: PKParameters,
    schedule: BatchSchedule | Schedule,
    times_min: npt.ArrayLike,
    *,
    initial_state: npt.ArrayLike | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Prediction:
    """Predict concentrations for every patient in ``params`` at ``times_min`` (min).

    ``schedule`` is one patient's :class:`~ketaflow.pk.schedule.Schedule` (given to everyone) or
    a :class:`~ketaflow.pk.schedule.BatchSchedule` with one row per patient. Time 0 is the start;
    the state at time 0 is zero unless ``initial_state`` (N, k) is given (amounts in mg, Ce in
    mg/L, in the order of :meth:`PKParameters.state_names`). Output times equal to an event time
    report the state just after it (a bolus at 5 min is in the 5-min value).
    """
    t = _check_times(times_min)
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}", field="chunk_size")
    n = params.n_patients
    k = len(params.state_names())
    batch = _as_batch(schedule, n)
    init: FloatArray | None = None
    if initial_state is not None:
        init = np.asarray(initial_state, dtype=np.float64)
        if init.shape != (n, k) or not np.all(np.isfinite(init)):
            raise InputError(
                f"initial_state must be a finite array of shape ({n}, {k})", field="initial_state"
            )
    out = _new_outputs(params, len(t), np.float64)
    final = np.empty((n, k))
    for i in range(0, n, chunk_size):
        sl = slice(i, min(i + chunk_size, n))
        part = _Outputs(
            cp=out.cp[:, sl],
            ce=None if out.ce is None else out.ce[:, sl],
            cm=None if out.cm is None else out.cm[:, sl],
        )
        sub = params if sl == slice(0, n) else params.take(sl)
        sub_batch = batch if sl == slice(0, n) else _slice_batch(batch, sl)
        final[sl] = _solve_chunk(sub, sub_batch, t, None if init is None else init[sl], part)
    return _prediction(t, out, batch, final)
