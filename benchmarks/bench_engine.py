"""Engine speed, side by side with PyTCI 1.2 (prints figures and ratios; not a test).

Scenarios (racemic ketamine, Kamp 2020 micro-constants, 0.5 mg/kg over 40 min, Cp and Ce every
10 s for 2 h = 721 output times):

(a) one 70-kg patient;
(b) 10,000 virtual patients with 30% log-normal variability (omega = sqrt(ln 1.09)) on every
    parameter (V1, V2, V3, CL, Q2, Q3, ke0) and weights 50-110 kg. PyTCI has no population
    API: its users build one model object per patient and loop, so it is timed on a subset
    (300 patients by default) and scaled per patient;
(c) 1,000,000 such patients through ``iter_chunks`` with a reducer that keeps each patient's
    peak Cp/Ce and its time, and the 5th/50th/95th percentiles across patients at every output
    time (streamed as histograms with 0.005-decade bins, i.e. percentiles to within 1.2%),
    with the peak resident memory of this process and of its worker processes.

Run: ``PYTHONPATH=src python benchmarks/bench_engine.py [--patients-c 1000000] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
import numpy.typing as npt

from ketaflow.pk.library import load_model
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import BatchSchedule, Schedule, parse_dose
from ketaflow.pk.solve import DEFAULT_CHUNK, Prediction, iter_chunks, simulate

FloatArray = npt.NDArray[np.float64]
OMEGA = float(np.sqrt(np.log(1.0 + 0.30**2)))
STEP_S = 10
DURATION_S = 7200
TIMES_MIN = np.arange(0, DURATION_S + STEP_S, STEP_S) / 60.0
DOSE = "0.5 mg/kg over 40 min"
INFUSION_S = 2400


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time (s) of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


# --- PyTCI -------------------------------------------------------------------------------------


def pytci_model_class() -> type:
    """A PyTCI model class for ketamine with given micro-constants (per minute, V1 in L)."""
    from PyTCI.models.base import Three

    class Ketamine(Three):  # type: ignore[misc]  # PyTCI ships no type information
        def __init__(
            self,
            v1: float,
            k10: float,
            k12: float,
            k13: float,
            k21: float,
            k31: float,
            keo: float,
        ) -> None:
            self.v1 = v1
            self.k10, self.k12, self.k13 = k10, k12, k13
            self.k21, self.k31, self.keo = k21, k31, keo
            Three.setup(self)  # converts 1/min to 1/s, empties the compartments
            self.set_integrator("exact")

    return Ketamine


def pytci_patient(cls: type, p: PKParameters, i: int, rate_mg_per_s: float) -> FloatArray:
    """Cp and Ce (mg/L) at every 10 s for one patient, as a PyTCI user writes it."""
    ke0 = p.ke0_per_min
    assert ke0 is not None
    m = cls(
        float(p.v1_l[i]),
        float(p.k10_per_min[i]),
        float(p.k12_per_min[i]),
        float(p.k13_per_min[i]),
        float(p.k21_per_min[i]),
        float(p.k31_per_min[i]),
        float(ke0[i]),
    )
    out = np.empty((2, len(TIMES_MIN)))
    out[:, 0] = 0.0
    for j in range(1, len(TIMES_MIN)):
        if j * STEP_S <= INFUSION_S:
            m.giveoverseconds(rate_mg_per_s, STEP_S)
        else:
            m.wait_time(STEP_S)
        out[0, j] = m.x1
        out[1, j] = m.xeo
    return out


# --- populations -------------------------------------------------------------------------------


def population(n: int, seed: int) -> tuple[PKParameters, FloatArray]:
    """n virtual patients: weights 50-110 kg, 30% log-normal IIV on every Kamp parameter."""
    model = load_model("kamp-2020")
    rng = np.random.default_rng(seed)
    weights = rng.uniform(50.0, 110.0, n)
    eta = {name: rng.normal(0.0, OMEGA, n) for name in model.variable_parameters}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.parameters(weight_kg=weights, eta=eta), weights


# --- (c) reducer -------------------------------------------------------------------------------

# Per-time histograms of concentration in mg/L on logarithmic bins taken straight from the bits
# of the float64: the exponent and the top 6 mantissa bits, i.e. 64 bins per doubling (each 1.1%
# wide), from 1e-4 mg/L (0.1 ng/mL) to 10 mg/L, plus a below-range and an above-range bin.
_SHIFT = 46
_LO = int(np.array([1e-4]).view(np.int64)[0] >> _SHIFT)
_HI = int(np.array([10.0]).view(np.int64)[0] >> _SHIFT)
N_BINS = _HI - _LO + 2
_BLOCK = 16  # time rows per histogram pass: keeps the temporaries in cache


@dataclass
class Summary:
    """What the reducer keeps from one chunk."""

    rows: slice
    peak_cp: FloatArray
    t_peak_cp: FloatArray
    peak_ce: FloatArray
    t_peak_ce: FloatArray
    hist_cp: npt.NDArray[np.int32]
    hist_ce: npt.NDArray[np.int32]
    worker_peak_rss_mib: float


def _peaks(c_tn: FloatArray, times_min: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-patient maximum (mg/L) and its time of a (T, n) array, one time row at a time.

    (``argmax(axis=0)`` gives the same indices but copies the array into patient order first,
    which costs 20x more.)
    """
    best = c_tn[0].copy()
    idx = np.zeros(c_tn.shape[1], dtype=np.intp)
    for t in range(1, c_tn.shape[0]):
        higher = c_tn[t] > best
        np.copyto(best, c_tn[t], where=higher)
        idx[higher] = t
    return best, times_min[idx]


def _histogram(c_tn: FloatArray) -> npt.NDArray[np.int32]:
    """Counts per (time, bin) of a (T, n) array of concentrations (mg/L, >= 0)."""
    t_all, n = c_tn.shape
    out = np.zeros((t_all, N_BINS), dtype=np.int32)
    buf = np.empty((_BLOCK, n), dtype=np.int64)
    offsets = (1 - _LO + np.arange(_BLOCK) * N_BINS)[:, None]
    for t0 in range(0, t_all, _BLOCK):
        rows = c_tn[t0 : t0 + _BLOCK]
        m = rows.shape[0]
        b = buf[:m]
        np.right_shift(np.ascontiguousarray(rows).view(np.int64), _SHIFT, out=b)
        np.clip(b, _LO - 1, _HI, out=b)
        b += offsets[:m]
        out[t0 : t0 + m] = np.bincount(b.ravel(), minlength=m * N_BINS).reshape(m, N_BINS)
    return out


def reduce_chunk(rows: slice, pred: Prediction) -> Summary:
    """Per-patient peaks and per-time histograms; module level so that workers can pickle it."""
    cp_tn = pred.cp_mg_per_l.T  # (T, n), contiguous: the solver's own layout
    assert pred.ce_mg_per_l is not None
    ce_tn = pred.ce_mg_per_l.T
    peak_cp, t_cp = _peaks(cp_tn, pred.times_min)
    peak_ce, t_ce = _peaks(ce_tn, pred.times_min)
    return Summary(
        rows,
        peak_cp * 1000.0,
        t_cp,
        peak_ce * 1000.0,
        t_ce,
        _histogram(cp_tn),
        _histogram(ce_tn),
        # Measured inside the worker: workers come from a fork server, so they are not this
        # process's children and RUSAGE_CHILDREN in the parent would not see them.
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    )


def percentiles_from_histogram(hist: npt.NDArray[np.int64], qs: tuple[float, ...]) -> FloatArray:
    """Percentiles (ng/mL) per time from accumulated histograms (geometric bin centres)."""
    codes = np.arange(_LO - 1, _HI + 2, dtype=np.int64) << _SHIFT
    edges = codes.view(np.float64)  # lower edge of each bin, then the top edge, in mg/L
    centres = np.sqrt(edges[:-1] * edges[1:]) * 1000.0
    centres[0] = 0.0  # below 0.1 ng/mL (including zero)
    cum = np.cumsum(hist, axis=1)
    out = np.empty((len(qs), hist.shape[0]))
    for i, q in enumerate(qs):
        k = (cum < q / 100.0 * cum[:, -1:]).sum(axis=1)
        out[i] = centres[np.minimum(k, N_BINS - 1)]
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--patients-b", type=int, default=10_000)
    ap.add_argument("--pytci-subset", type=int, default=300)
    ap.add_argument("--patients-c", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--skip-c", action="store_true")
    args = ap.parse_args(argv)

    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}, PyTCI {version('PyTCI')}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )
    cls = pytci_model_class()

    # (a) one patient ---------------------------------------------------------------------
    model = load_model("kamp-2020")
    one = model.parameters(weight_kg=70.0)
    schedule = Schedule.from_text(DOSE, 70.0)
    rate_mg_per_s = 0.5 * 70.0 / INFUSION_S
    t_ours, pred = best_of(lambda: simulate(one, schedule, TIMES_MIN), 20)
    t_pytci, ref = best_of(lambda: pytci_patient(cls, one, 0, rate_mg_per_s), 5)
    assert pred.ce_mg_per_l is not None
    mask = ref > 0
    ours = np.vstack([pred.cp_mg_per_l[0], pred.ce_mg_per_l[0]])
    agree = float(np.max(np.abs(ours[mask] / ref[mask] - 1.0)))
    print("\n(a) one patient, 0.5 mg/kg over 40 min, Cp and Ce every 10 s for 2 h (721 times)")
    print(
        f"    ketaflow {t_ours * 1e3:8.3f} ms   PyTCI exact {t_pytci * 1e3:8.3f} ms   "
        f"ratio {t_pytci / t_ours:6.1f}x"
    )
    print(f"    agreement with PyTCI: max relative difference {agree:.1e} (Cp and Ce, t > 0)")

    # (b) 10,000 patients -----------------------------------------------------------------
    n_b = args.patients_b
    params, weights = population(n_b, seed=1)
    batch = BatchSchedule.from_instructions([parse_dose(DOSE)], weights)
    t_b, pred_b = best_of(lambda: simulate(params, batch, TIMES_MIN), 3)
    sub = min(args.pytci_subset, n_b)
    t0 = time.perf_counter()
    ref_b = [pytci_patient(cls, params, i, 0.5 * weights[i] / INFUSION_S) for i in range(sub)]
    t_pytci_b = (time.perf_counter() - t0) / sub
    assert pred_b.ce_mg_per_l is not None
    agree_b = 0.0
    for i, r in enumerate(ref_b):
        o = np.vstack([pred_b.cp_mg_per_l[i], pred_b.ce_mg_per_l[i]])
        agree_b = max(agree_b, float(np.max(np.abs(o[r > 0] / r[r > 0] - 1.0))))
    per_ours = t_b / n_b
    print(f"\n(b) {n_b:,} virtual patients (30% log-normal IIV on every parameter), same outputs")
    print(f"    ketaflow, 1 process:      {t_b:7.3f} s = {per_ours * 1e6:7.2f} us/patient")
    t_b2 = None
    if args.workers > 1:

        def run_parallel() -> int:
            return sum(
                len(x)
                for x in iter_chunks(
                    params,
                    batch,
                    TIMES_MIN,
                    reduce=_count,
                    chunk_size=max(1, n_b // (2 * args.workers)),
                    workers=args.workers,
                )
            )

        t_b2, _ = best_of(run_parallel, 3)
        print(
            f"    ketaflow, {args.workers} processes:    {t_b2:7.3f} s = "
            f"{t_b2 / n_b * 1e6:7.2f} us/patient (includes process start)"
        )
    print(
        f"    PyTCI exact, looped:      {t_pytci_b * 1e3:7.3f} ms/patient "
        f"(timed on {sub} patients; x{n_b:,} = {t_pytci_b * n_b:6.1f} s)"
    )
    print(f"    ratio per patient, 1 process each: {t_pytci_b / per_ours:7.0f}x")
    print(f"    agreement with PyTCI on those {sub}: max relative difference {agree_b:.1e}")

    if args.skip_c:
        return 0
    # (c) 1,000,000 patients in chunks ----------------------------------------------------
    n_c = args.patients_c
    t0 = time.perf_counter()
    params_c, weights_c = population(n_c, seed=2)
    batch_c = BatchSchedule.from_instructions([parse_dose(DOSE)], weights_c)
    t_gen = time.perf_counter() - t0
    peak_cp = np.empty(n_c)
    peak_ce = np.empty(n_c)
    t_peak_ce = np.empty(n_c)
    hist_cp = np.zeros((len(TIMES_MIN), N_BINS), dtype=np.int64)
    hist_ce = np.zeros_like(hist_cp)
    worker_rss = 0.0
    t0 = time.perf_counter()
    for s in iter_chunks(
        params_c,
        batch_c,
        TIMES_MIN,
        reduce=reduce_chunk,
        chunk_size=args.chunk,
        workers=args.workers,
    ):
        peak_cp[s.rows] = s.peak_cp
        peak_ce[s.rows] = s.peak_ce
        t_peak_ce[s.rows] = s.t_peak_ce
        hist_cp += s.hist_cp
        hist_ce += s.hist_ce
        worker_rss = max(worker_rss, s.worker_peak_rss_mib)
    t_c = time.perf_counter() - t0
    own = peak_rss_mib()
    n_proc = args.workers if args.workers > 1 else 0  # workers=1 reduces in this process
    qs = (5.0, 50.0, 95.0)
    pc_cp = percentiles_from_histogram(hist_cp, qs)
    print(
        f"\n(c) {n_c:,} patients, chunks of {args.chunk:,}, {args.workers} worker processes, "
        "reducer: per-patient peaks + per-time percentiles"
    )
    print(
        f"    simulate + reduce: {t_c:6.2f} s ({t_c / n_c * 1e6:.2f} us/patient); "
        f"generating the population: {t_gen:.2f} s"
    )
    print(
        f"    peak RSS (ru_maxrss): this process {own:.0f} MiB, each worker at most "
        f"{worker_rss:.0f} MiB; all processes together at most {own + n_proc * worker_rss:.0f} MiB"
    )
    i40 = int(np.searchsorted(TIMES_MIN, 40.0))
    print(
        "    Cp at 40 min, 5/50/95th percentile: "
        + " / ".join(f"{v:.0f}" for v in pc_cp[:, i40])
        + " ng/mL"
    )
    print(
        f"    peak Ce median {np.median(peak_ce):.0f} ng/mL at {np.median(t_peak_ce):.1f} min; "
        f"peak Cp median {np.median(peak_cp):.0f} ng/mL"
    )
    return 0


def _count(rows: slice, pred: Prediction) -> FloatArray:
    return np.asarray(pred.cp_mg_per_l[:, -1])


if __name__ == "__main__":
    sys.exit(main())
