"""In-silico trial on a real Dask distributed cluster equals the local run, bitwise.

A LocalCluster with two worker processes (one thread each) runs the same trial (a 3-session
course with between-session titration) as this process.
The chunking is the same and chunk results are merged in chunk order, so the summaries are
identical to the last bit (not just to 1e-12), and so are the per-patient rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ketaflow.sim.arms import resolve_arms
from ketaflow.sim.course import CourseSettings
from ketaflow.sim.engine import SessionSettings, TimeGrid
from ketaflow.sim.trial import make_spec, run_trial

pytestmark = pytest.mark.slow


def test_local_cluster_equals_local_run(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="dask.distributed not installed")
    spec = make_spec(
        resolve_arms(["depression-standard", "depression-titration"]),
        n=2000,
        seed=31,
        chunk_size=500,
        settings=SessionSettings(grid=TimeGrid(horizon_min=240.0, dt_min=0.5)),
        course=CourseSettings(sessions=3),
    )
    local = run_trial(spec, workers=1, out_dir=tmp_path / "local", report=False)
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        remote = run_trial(
            spec, scheduler=cluster.scheduler_address, out_dir=tmp_path / "dask", report=False
        )
    assert remote.summary == local.summary

    import pyarrow.parquet as pq

    a = pq.read_table(local.files["patients"])
    b = pq.read_table(remote.files["patients"])
    assert a.num_rows == b.num_rows == 2000 * 2 * 3
    # The titration arm did titrate (session 3 differs from the fixed-dose arm).
    paired = local.summary["course"]["paired"][0]["per_session"]
    assert paired[2]["outcomes"]["dose_mg_per_kg"]["mean_difference"] > 0.05
    for name in a.column_names:
        np.testing.assert_array_equal(
            a.column(name).to_numpy(zero_copy_only=False),
            b.column(name).to_numpy(zero_copy_only=False),
            err_msg=name,
        )


def test_unreachable_scheduler_is_a_clear_error() -> None:
    from ketaflow.errors import InputError

    spec = make_spec(resolve_arms(["depression-standard"]), n=10, seed=1)
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        run_trial(spec, scheduler="tcp://127.0.0.1:9", scheduler_timeout_s=1.0)
