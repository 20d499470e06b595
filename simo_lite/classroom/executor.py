"""Run a list of jobs in worker processes: a local process pool, Slurm (``submitit``), or one by one.

A job is a picklable callable with its arguments (a module-level function: the workers import it by
name)::

    from simo_lite.classroom.executor import Job, run_jobs
    results = run_jobs([Job(fn, (seed,)) for seed in (0, 1, 2)], executor="pool", workers=2, threads=1)
    failed = [r for r in results if isinstance(r, BaseException)]

=========  ==================================================================================
executor   where the jobs run
=========  ==================================================================================
serial     in this process, one after the other (``threads`` applies while they run)
pool       ``workers`` spawned processes (``concurrent.futures.ProcessPoolExecutor``, "spawn"),
           each pinned to ``threads`` torch / OpenMP / MKL threads
submitit   ``submitit.AutoExecutor``: Slurm when ``sbatch`` is there, else submitit's local
           executor (``cluster="local"``); at most ``workers`` jobs at a time, ``threads`` CPUs each
=========  ==================================================================================

:func:`run_jobs` returns one entry per job, in the jobs' order: the job's return value, or the
exception it raised (its traceback text in the exception's ``remote_traceback`` attribute). A job
that fails never stops the others. Importing this module imports neither torch nor submitit.
"""
from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

__all__ = ["EXECUTORS", "Job", "JobError", "run_jobs", "pin_threads", "pinned_threads", "default_threads",
           "worker_info"]

EXECUTORS = ("serial", "pool", "submitit")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SUBMITIT_TIMEOUT_MIN = 24 * 60          # submitit's own default (2 minutes locally) is too short for a run


@dataclass(frozen=True)
class Job:
    """One job: ``fn(*args, **kwargs)``; ``name`` labels it in messages (default: the function's name)."""
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def label(self) -> str:
        """``name``, or the function's name."""
        return self.name or getattr(self.fn, "__name__", repr(self.fn))


class JobError(RuntimeError):
    """A job whose exception could not be sent back as it was (it does not pickle), or a job that
    never finished (its worker died, submitit lost it); ``str()`` says what happened."""


def default_threads(workers: int) -> int:
    """Threads per worker when none are given: the CPU cores shared between ``workers`` (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def pin_threads(threads: int | None) -> None:
    """Pin this process to ``threads`` compute threads: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (read by
    torch when it is imported, and inherited by the processes this one starts, e.g. notebook kernels),
    and ``torch.set_num_threads`` when torch is already imported. ``None`` changes nothing."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    for v in THREAD_VARIABLES:
        os.environ[v] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """:func:`pin_threads` for the duration of the block, then the previous settings back."""
    if threads is None:
        yield
        return
    old_env = {v: os.environ.get(v) for v in THREAD_VARIABLES}
    old_torch = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        pin_threads(threads)
        yield
    finally:
        for v, value in old_env.items():
            if value is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = value
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(old_torch or default_threads(1))


def worker_info(sleep: float = 0.0) -> dict:
    """Where a job runs: ``{"pid", "threads" (torch.get_num_threads()), "omp" ($OMP_NUM_THREADS), "start",
    "end"}`` after sleeping ``sleep`` seconds (a job for checking an executor)."""
    import torch
    start = time.time()
    time.sleep(sleep)
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "start": start, "end": time.time()}


@dataclass
class _Failure:
    """What a worker sends back for a job that raised: the exception (or a stand-in) and its traceback."""
    error: BaseException
    traceback: str


def _call(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any], threads: int | None = None) -> Any:
    """Run one job in a worker: its value, or a :class:`_Failure` (an exception never escapes, so a
    failing job is reported as itself and the worker carries on)."""
    pin_threads(threads)
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as e:          # SystemExit included: a job's sys.exit is its failure, not the worker's
        tb = traceback.format_exc()
        try:
            pickle.dumps(e)
        except Exception:
            e = JobError(f"{type(e).__name__}: {e}")
        return _Failure(e, tb)


def _unwrap(value: Any) -> Any:
    """A worker's answer as :func:`run_jobs` returns it: the value, or the exception with its traceback."""
    if isinstance(value, _Failure):
        err = value.error
        try:
            err.remote_traceback = value.traceback
        except AttributeError:          # an exception type that takes no attributes
            pass
        return err
    return value


def _as_job(job: Job | Callable[..., Any] | tuple) -> Job:
    if isinstance(job, Job):
        return job
    if callable(job):
        return Job(job)
    if isinstance(job, tuple) and job and callable(job[0]):
        return Job(job[0], tuple(job[1:]))
    raise TypeError(f"a job is a Job, a callable or a (callable, *args) tuple, got {job!r}")


def run_jobs(jobs: Sequence[Job | Callable[..., Any] | tuple], executor: str = "pool", workers: int = 2,
             threads: int | None = None, folder: str | Path | None = None,
             on_done: Callable[[int, Job, Any], None] | None = None, cluster: str | None = None,
             submitit_params: Mapping[str, Any] | None = None) -> list[Any]:
    """Run ``jobs`` on ``executor`` (:data:`EXECUTORS`) and return their results in the jobs' order; a job
    that raised is reported by its exception (``remote_traceback``: the traceback text) in its place.

    ``workers``: processes (pool) or jobs at a time (submitit); ``threads``: compute threads of each
    (default: the cores shared between the workers; serial: unchanged). ``on_done(index, job, result)``
    is called in this process as each job finishes (in the order they finish). ``folder``: submitit's
    logs and pickles (default ``<runs folder>/submitit``); ``cluster``: submitit's cluster (``None``:
    Slurm when available, else ``"local"``); ``submitit_params``: more ``update_parameters`` settings
    (``slurm_partition``, ``timeout_min``, ``mem_gb``, ...). Ctrl-C cancels the jobs not yet finished."""
    jobs = [_as_job(j) for j in jobs]
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    done = on_done or (lambda i, job, result: None)
    if not jobs:
        return []
    if executor == "serial":
        return _run_serial(jobs, threads, done)
    threads = default_threads(workers) if threads is None else threads
    if executor == "pool":
        return _run_pool(jobs, workers, threads, done)
    return _run_submitit(jobs, workers, threads, done, folder, cluster, submitit_params)


def _run_serial(jobs: list[Job], threads: int | None, done: Callable) -> list[Any]:
    results = []
    with pinned_threads(threads):
        for i, job in enumerate(jobs):
            results.append(_unwrap(_call(job.fn, job.args, job.kwargs)))
            done(i, job, results[-1])
    return results


def _run_pool(jobs: list[Job], workers: int, threads: int, done: Callable) -> list[Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    results: list[Any] = [None] * len(jobs)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=pin_threads, initargs=(threads,))
    try:
        futures = {pool.submit(_call, job.fn, job.args, job.kwargs): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = _unwrap(fut.result())
            except Exception as e:      # the worker died (BrokenProcessPool) or the result did not unpickle
                results[i] = e
            done(i, jobs[i], results[i])
    except BaseException:               # Ctrl-C: nothing new starts; the workers get the signal too
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _run_submitit(jobs: list[Job], workers: int, threads: int, done: Callable, folder: str | Path | None,
                  cluster: str | None, params: Mapping[str, Any] | None) -> list[Any]:
    try:
        import submitit
    except ImportError:
        raise ImportError("executor 'submitit' needs the submitit package: pip install submitit") from None
    if folder is None:
        from ..paths import runs_root
        folder = runs_root() / "submitit"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    ex.update_parameters(**{"timeout_min": SUBMITIT_TIMEOUT_MIN, "cpus_per_task": threads, **(params or {})})
    results: list[Any] = [None] * len(jobs)
    waiting = list(range(len(jobs)))
    running: dict[int, Any] = {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:       # at most `workers` jobs at a time
                i = waiting.pop(0)
                job = jobs[i]
                running[i] = ex.submit(_call, job.fn, job.args, dict(job.kwargs), threads)
            finished = [i for i, sj in running.items() if sj.done()]
            if not finished:
                time.sleep(0.2)
                continue
            for i in finished:
                sj = running.pop(i)
                try:
                    results[i] = _unwrap(sj.result())
                except Exception as e:  # killed, timed out, lost by the scheduler: submitit's own error
                    results[i] = JobError(f"submitit job {sj.job_id} did not finish: {e}")
                done(i, jobs[i], results[i])
    except BaseException:
        for sj in running.values():
            try:
                sj.cancel(check=False)
            except Exception:
                pass
        raise
    return results
