"""Exact solution of linear PK models under piecewise-constant input, batched over patients.

Between two consecutive event or output times the input rate R is constant, so the state moves
exactly as ``x(t+Δ) = Φ(Δ)·x(t) + Γ(Δ)·R`` with ``Φ = exp(A·Δ)`` and ``Γ = ∫₀^Δ exp(A·s)·b ds``.
Both come from one matrix exponential of the augmented matrix ``[[A, b], [0, 0]]·Δ`` (Van Loan),
which needs no eigenvalue case analysis: repeated roots (ke0 equal to a disposition rate
constant, say) are handled as well as distinct ones. There is one exponential per distinct
interval length and patient, computed for all patients at once; the time loop then does a few
array operations per step, vectorised over patients. Boluses add to A1 at their time.

Large batches run in chunks (bounded memory). With ``workers > 1`` chunks run in worker
processes: the per-step array operations are short, so threads would spend their time queueing
for the GIL rather than computing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from ketaflow.errors import InputError
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import BatchSchedule, Schedule
from ketaflow.units import NG_PER_ML_PER_MG_PER_L

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T")

#: Patients per chunk for large batches: small enough that one chunk's state and transition
#: matrices stay in cache, large enough that per-step Python overhead is negligible.
DEFAULT_CHUNK = 8192
#: Below this many patients the batched matrix product beats the unrolled element-wise form.
_SMALL_BATCH = 64
#: Interval lengths closer than this (min) share one transition matrix; 1e-12 min keeps the
#: resulting error far below the 1e-9 relative accuracy target.
_DT_DECIMALS = 12


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


def expm_batch(a: FloatArray) -> FloatArray:
    """Matrix exponential of every matrix in ``a`` (shape (N, m, m)), all at once.

    Scaling and squaring with a [13/13] Padé approximant (Higham 2005), the method SciPy uses for
    one matrix, vectorised over the batch: each matrix gets its own scaling power, so a small
    matrix is not over-scaled because a large one shares its batch.
    """
    m = a.shape[1]
    norm = np.abs(a).sum(axis=1).max(axis=1)
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


def discretize(params: PKParameters, dt_min: float | FloatArray) -> tuple[FloatArray, FloatArray]:
    """Exact one-step transition for constant input over ``dt_min``.

    Returns ``(Phi, Gamma)`` with shapes (N, k, k) and (N, k): the state after ``dt_min`` is
    ``Phi @ x + Gamma * rate_mg_per_min``.
    """
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
    e = expm_batch(aug)
    return e[:, :k, :k], e[:, :k, k]


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predicted concentrations for N patients at T output times.

    Arrays are (N, T). Concentrations are stored in mg/L (internal); the ``*_ng_per_ml``
    properties give the public unit.
    """

    times_min: FloatArray
    cp_mg_per_l: FloatArray
    ce_mg_per_l: FloatArray | None
    cm_mg_per_l: FloatArray | None
    rate_mg_per_min: FloatArray
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
    def rate_mg_per_h(self) -> FloatArray:
        """Infusion rate holding from each output time onward, mg/h."""
        return self.rate_mg_per_min * 60.0


def _grid(
    schedule: BatchSchedule, times_min: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Union of output, breakpoint and bolus times from 0 to the last output time."""
    t_end = float(times_min[-1])
    events = np.concatenate([schedule.breakpoints_min, schedule.bolus_times_min])
    grid = np.unique(np.concatenate([[0.0], times_min, events[events <= t_end]]))
    out_idx = np.searchsorted(grid, times_min)
    bolus_idx = np.searchsorted(grid, schedule.bolus_times_min)
    return grid, out_idx, bolus_idx


def _solve_chunk(
    params: PKParameters,
    schedule: BatchSchedule,
    times_min: FloatArray,
    initial_state: FloatArray | None,
    dtype: npt.DTypeLike,
) -> Prediction:
    names = params.state_names()
    k = len(names)
    n = params.n_patients
    grid, out_idx, bolus_idx = _grid(schedule, times_min)
    n_steps = len(grid) - 1
    dts = np.round(np.diff(grid), _DT_DECIMALS)
    unique_dt, dt_index = np.unique(dts, return_inverse=True)
    # Rate on each grid interval (constant because every breakpoint is a grid point).
    if len(schedule.breakpoints_min) >= 2 and n_steps > 0:
        seg = np.searchsorted(schedule.breakpoints_min, grid[:-1], side="right") - 1
        inside = (seg >= 0) & (seg < len(schedule.breakpoints_min) - 1)
        # (steps, patients): each step reads one contiguous row.
        rate_steps = np.zeros((n_steps, n))
        rate_steps[inside] = schedule.rates_mg_per_min[:, seg[inside]].T
    else:
        rate_steps = np.zeros((n_steps, n))
    bolus_at: dict[int, FloatArray] = {}
    for b, gi in enumerate(bolus_idx):
        if gi < len(grid):
            bolus_at[int(gi)] = bolus_at.get(int(gi), 0.0) + schedule.bolus_mg[:, b]

    phis: list[FloatArray] = []
    gammas: list[FloatArray] = []
    for dt in unique_dt:
        phi, gamma = discretize(params, float(dt))
        phis.append(phi)
        gammas.append(gamma)

    # Outputs are filled one time point at a time, so they are laid out (T, n) for contiguous
    # writes and transposed once at the end.
    n_out = len(times_min)
    out_cp = np.empty((n_out, n), dtype=dtype)
    out_ce = np.empty((n_out, n), dtype=dtype) if "Ce" in names else None
    out_cm = np.empty((n_out, n), dtype=dtype) if params.metabolite is not None else None
    # Map grid index -> output columns (several outputs can share a grid point).
    out_cols: dict[int, list[int]] = {}
    for col, gi in enumerate(out_idx):
        out_cols.setdefault(int(gi), []).append(col)

    x = np.zeros((k, n)) if initial_state is None else np.array(initial_state, dtype=float).T
    small = n <= _SMALL_BATCH
    # Large batches: Phi laid out (j, i, n) so that "column j of every patient's Phi" is one
    # contiguous (k, n) block; a step is then k multiply-adds over whole (k, n) arrays.
    phis_cols = [np.ascontiguousarray(p.transpose(2, 1, 0)) for p in phis]
    gammas_t = [np.ascontiguousarray(g.T) for g in gammas]
    used_cols = [[j for j in range(k) if np.any(p[j] != 0.0)] for p in phis_cols]
    tmp = np.empty((k, n))
    x_new = np.empty_like(x)
    i_ce = names.index("Ce") if "Ce" in names else -1
    i_m1 = names.index("M1") if "M1" in names else -1

    def record(gi: int) -> None:
        cols = out_cols.get(gi)
        if cols is None:
            return
        c0 = cols[0]
        np.divide(x[0], params.v1_l, out=out_cp[c0])
        if out_ce is not None:
            out_ce[c0] = x[i_ce]
        if out_cm is not None and params.metabolite is not None:
            np.divide(x[i_m1], params.metabolite.v1_l, out=out_cm[c0])
        for c in cols[1:]:
            out_cp[c] = out_cp[c0]
            if out_ce is not None:
                out_ce[c] = out_ce[c0]
            if out_cm is not None:
                out_cm[c] = out_cm[c0]

    for s in range(n_steps + 1):
        if s in bolus_at:
            x[0] += bolus_at[s]
        record(s)
        if s == n_steps:
            break
        u = int(dt_index[s])
        r = rate_steps[s]
        if small:
            x = np.einsum("nij,jn->in", phis[u], x) + gammas[u].T * r
            continue
        cols = phis_cols[u]
        np.multiply(gammas_t[u], r, out=x_new)
        for j in used_cols[u]:
            np.multiply(cols[j], x[j], out=tmp)
            x_new += tmp
        x, x_new = x_new, x

    rate_out = schedule.rate_mg_per_min_at(times_min)

    def flip(a: FloatArray | None) -> FloatArray | None:
        # A transposed view, not a copy: copying would cost as much as the solve itself.
        return None if a is None else a.T

    cp_out = flip(out_cp)
    assert cp_out is not None
    return Prediction(
        times_min=times_min,
        cp_mg_per_l=cp_out,
        ce_mg_per_l=flip(out_ce),
        cm_mg_per_l=flip(out_cm),
        rate_mg_per_min=rate_out,
        state_final=x.T.copy(),
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


def _identity(_sl: slice, pred: Prediction) -> Prediction:
    return pred


def _chunk_job(
    params: PKParameters,
    batch: BatchSchedule,
    t: FloatArray,
    sl: slice,
    reduce: Callable[[slice, Prediction], T],
    dtype: npt.DTypeLike,
) -> T:
    pred = _solve_chunk(params.take(sl), _slice_batch(batch, sl), t, None, dtype)
    return reduce(sl, pred)


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
    needs (peaks, percentiles, ...). Results come back in patient order. With ``workers > 1``
    chunks run in that many processes (``reduce`` must then be picklable: a module-level
    function).
    """
    t = _check_times(times_min)
    n = params.n_patients
    batch = _as_batch(schedule, n)
    slices = [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
    if workers <= 1 or len(slices) == 1:
        for sl in slices:
            yield _chunk_job(params, batch, t, sl, reduce, dtype)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # Bounded look-ahead: at most two chunks per worker are in flight at once.
        pending = []
        for sl in slices:
            sub = params.take(sl)
            pending.append(
                pool.submit(
                    _chunk_job,
                    sub,
                    _slice_batch(batch, sl),
                    t,
                    slice(0, sub.n_patients),
                    reduce,
                    dtype,
                )
            )
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


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
    mg/L, in the order of :meth:`PKParameters.state_names`).
    """
    t = _check_times(times_min)
    n = params.n_patients
    batch = _as_batch(schedule, n)
    if initial_state is not None:
        init = np.asarray(initial_state, dtype=np.float64)
        if init.shape != (n, len(params.state_names())):
            raise InputError(
                f"initial_state must have shape ({n}, {len(params.state_names())})",
                field="initial_state",
            )
        return _solve_chunk(params, batch, t, init, np.float64)
    if n <= chunk_size:
        return _solve_chunk(params, batch, t, None, np.float64)
    parts = list(iter_chunks(params, batch, t, chunk_size=chunk_size, reduce=_identity))
    ce = [p.ce_mg_per_l for p in parts]
    cm = [p.cm_mg_per_l for p in parts]
    return Prediction(
        times_min=t,
        cp_mg_per_l=np.concatenate([p.cp_mg_per_l for p in parts]),
        ce_mg_per_l=None if ce[0] is None else np.concatenate([c for c in ce if c is not None]),
        cm_mg_per_l=None if cm[0] is None else np.concatenate([c for c in cm if c is not None]),
        rate_mg_per_min=np.concatenate([p.rate_mg_per_min for p in parts]),
        state_final=np.concatenate([p.state_final for p in parts]),
    )
