"""Benchmark: in-silico trial of depression-standard at scale (time, peak memory, scaling).

Runs ``ketaflow.sim.trial.run_trial`` for the ``depression-standard`` protocol (the dosing
package's protocol with its in-session rules, the clinic's alarm rules and discharge profile)
for each requested number of patients and worker count, one session per patient, each
configuration in a fresh Python process so that its peak memory is its own. Prints one line per
run and the speed-up from 1 to N workers. Then, unless ``--course-n 0``, a course figure:
``--course-n`` patients through ``depression-standard`` and ``depression-titration`` courses
of ``--course-sessions`` sessions each (between-session titration, response assumption
``none``), on each worker count; "us/pt-session" divides the time by patients x sessions x
protocols.

"CPU s" is the CPU time of the run and its workers, "cores" that divided by the wall time:
on a machine shared with other work, a speed-up below the number of workers with "cores" below
it means the workers did not get the processors, not that the work did not split.

Peak memory is ``ru_maxrss``: of the run's main process, and the largest of its worker
processes (``RUSAGE_CHILDREN`` reports the largest child, not the sum); the total peak is at
most ``main + workers x largest worker``, which is what the "peak MiB" column shows.

    PYTHONPATH=src python benchmarks/bench_trial.py            # 1e6 x 1 session; 1e5 x 6 x 2
    PYTHONPATH=src python benchmarks/bench_trial.py --n 100000 --workers 1 2 --course-n 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COURSE_PROTOCOLS = ["depression-standard", "depression-titration"]


def _one(n: int, workers: int, chunk_size: int, patients: bool, sessions: int) -> dict[str, float]:
    import resource

    from ketaflow.sim.arms import resolve_arms
    from ketaflow.sim.course import CourseSettings
    from ketaflow.sim.trial import make_spec, run_trial

    protocols = ["depression-standard"] if sessions == 1 else COURSE_PROTOCOLS
    spec = make_spec(
        resolve_arms(protocols),
        n=n,
        seed=20240601,
        chunk_size=chunk_size,
        course=CourseSettings(sessions=sessions),
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = run_trial(spec, workers=workers, out_dir=Path(tmp), write_patients=patients)
        elapsed = time.perf_counter() - started
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = me.ru_maxrss / 1024.0  # KiB -> MiB on Linux
    child = kids.ru_maxrss / 1024.0
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    peak = own + (workers * child if workers > 1 else 0.0)
    out = result.summary["arms"]["depression-standard"]["outcomes"]
    course = result.summary["course"]["arms"][protocols[-1]]["per_course"]["outcomes"]
    return {
        "n": n,
        "workers": workers,
        "sessions": sessions,
        "protocols": len(protocols),
        "elapsed_s": elapsed,
        "us_per_patient": elapsed / n * 1e6,
        "us_per_patient_session": elapsed / (n * sessions * len(protocols)) * 1e6,
        "max_dose_mean": course["max_dose_mg_per_kg"]["mean"],
        "maxrss_main_mib": own,
        "maxrss_worker_mib": child,
        "peak_mib": peak,
        "cpu_s": cpu,
        "cores_used": cpu / elapsed,
        "peak_cp_median": out["peak_cp_ng_per_ml"]["median"],
    }


def main() -> None:
    """Run the configurations, each in its own process, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk-size", type=int, default=16_384)
    parser.add_argument("--no-patients", action="store_true", help="skip the per-patient file")
    parser.add_argument("--course-n", type=int, default=100_000, help="0: no course figure")
    parser.add_argument("--course-sessions", type=int, default=6)
    parser.add_argument("--sessions", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        res = _one(args.n[0], args.workers[0], args.chunk_size, not args.no_patients, args.sessions)
        print(json.dumps(res))
        return
    print(
        f"depression-standard, chunk {args.chunk_size}, "
        f"{'no per-patient file' if args.no_patients else 'per-patient Parquet written'}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(
        f"{'n':>9} {'workers':>7} {'time s':>8} {'us/pt':>7} {'main MiB':>9} "
        f"{'worker MiB':>10} {'peak MiB':>9} {'CPU s':>7} {'cores':>5}",
        flush=True,
    )
    results: dict[tuple[int, int], dict[str, float]] = {}
    for n in args.n:
        for w in args.workers:
            r = _run(n, w, args, sessions=1)
            results[(n, w)] = r
            print(
                f"{n:>9,} {w:>7} {r['elapsed_s']:>8.1f} {r['us_per_patient']:>7.1f} "
                f"{r['maxrss_main_mib']:>9.0f} {r['maxrss_worker_mib']:>10.0f} "
                f"{r['peak_mib']:>9.0f} {r['cpu_s']:>7.1f} {r['cores_used']:>5.2f}",
                flush=True,
            )
    for n in args.n:
        base = results.get((n, 1))
        for w in args.workers:
            if base is not None and w > 1 and (n, w) in results:
                speedup = base["elapsed_s"] / results[(n, w)]["elapsed_s"]
                print(f"speed-up {n:,} patients, 1 -> {w} workers: {speedup:.2f}x", flush=True)
    if args.course_n <= 0:
        return
    print(
        f"course: {' + '.join(COURSE_PROTOCOLS)}, {args.course_sessions} sessions each, "
        f"response none; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(
        f"{'n':>9} {'workers':>7} {'time s':>8} {'us/pt-session':>13} {'peak MiB':>9} "
        f"{'CPU s':>7} {'cores':>5} {'mean max dose':>13}",
        flush=True,
    )
    for w in args.workers:
        r = _run(args.course_n, w, args, sessions=args.course_sessions)
        print(
            f"{args.course_n:>9,} {w:>7} {r['elapsed_s']:>8.1f} "
            f"{r['us_per_patient_session']:>13.1f} {r['peak_mib']:>9.0f} {r['cpu_s']:>7.1f} "
            f"{r['cores_used']:>5.2f} {r['max_dose_mean']:>13.3f}",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


def _run(n: int, workers: int, args: argparse.Namespace, *, sessions: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", "--n", str(n), "--workers", str(workers)]
    cmd += ["--chunk-size", str(args.chunk_size), "--sessions", str(sessions)]
    if args.no_patients:
        cmd.append("--no-patients")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    main()
