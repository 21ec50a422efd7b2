"""An independent reference for the PK solver: adaptive high-order ODE integration.

It shares nothing with ``ketaflow.pk.solve`` except the system matrix ``A`` of
``PKParameters.system_matrix`` (whose entries are checked separately against the published
micro-constants): the state is integrated with SciPy's DOP853 (8th-order Dormand-Prince) at
``rtol = 1e-12`` piecewise between events, so that every rate change and bolus is a restart
rather than a discontinuity inside a step.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.integrate import solve_ivp

from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import BatchSchedule

FloatArray = npt.NDArray[np.float64]

RTOL = 1e-13


def reference_states(
    params: PKParameters,
    schedule: BatchSchedule,
    times_min: npt.ArrayLike,
    *,
    patient: int = 0,
    initial_state: FloatArray | None = None,
) -> FloatArray:
    """States (T, k) of one patient at ``times_min`` by piecewise DOP853 integration.

    An output time equal to an event time reports the state *after* the event (right-continuous,
    as the solver does).
    """
    a = params.system_matrix()[patient]
    k = a.shape[0]
    t_out = np.asarray(times_min, dtype=np.float64)
    bps = schedule.breakpoints_min
    rates = schedule.rates_mg_per_min[patient]
    events = np.unique(np.concatenate([[0.0], bps, schedule.bolus_times_min, [t_out.max()]]))
    events = events[events <= t_out.max()]
    x = np.zeros(k) if initial_state is None else np.array(initial_state, dtype=np.float64)
    out = np.empty((t_out.size, k))
    scale = 1.0

    def rate_at(t: float) -> float:
        j = int(np.searchsorted(bps, t, side="right")) - 1
        return float(rates[j]) if 0 <= j < len(rates) else 0.0

    for i, t0 in enumerate(events):
        for b, tb in enumerate(schedule.bolus_times_min):
            if tb == t0:
                x[0] += schedule.bolus_mg[patient, b]
        scale = max(scale, float(np.abs(x).max()))
        at = t_out == t0
        out[at] = x
        if i == len(events) - 1:
            break
        t1 = float(events[i + 1])
        r = rate_at(float(t0))
        b_vec = np.zeros(k)
        b_vec[0] = r
        inside = (t_out > t0) & (t_out < t1)

        def rhs(_t: float, y: FloatArray, b_vec: FloatArray = b_vec) -> FloatArray:
            return np.asarray(a @ y + b_vec)

        sol = solve_ivp(
            rhs,
            (float(t0), t1),
            x,
            method="DOP853",
            rtol=RTOL,
            atol=1e-22 * max(scale, r * (t1 - t0), 1.0),
            t_eval=np.concatenate([t_out[inside], [t1]]),
        )
        if not sol.success:
            raise RuntimeError(sol.message)
        out[inside] = sol.y[:, :-1].T
        x = sol.y[:, -1].copy()
    return out
