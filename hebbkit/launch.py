"""Where units of work run: in this process, in local worker processes, or as a SLURM job array.

A unit is a plain function call whose result is small and picklable (Lagani's (method, seed):
:func:`hebbkit.lagani.experiment.run_unit`). :class:`Launcher` runs the calls given to :meth:`Launcher.submit`
and hands their outcomes back as they finish (:meth:`Launcher.wait`); the caller alone writes the results
(so the SQLite store stays in one process on one host). Three kinds (:class:`LaunchConfig`):

* ``inline``: in this process, one at a time (the default; an error in a unit propagates);
* ``local``: `submitit <https://github.com/facebookincubator/submitit>`_'s ``LocalExecutor``, a worker process
  per unit, ``parallel`` at once, each on its own GPU where there are GPUs;
* ``slurm``: submitit's ``AutoExecutor`` on a SLURM cluster: one job array, one unit per array task, with
  ``gpus_per_task`` GPUs (``--gres=gpu:N``), ``cpus_per_task`` CPUs, a ``partition`` and a ``time_min`` limit,
  at most ``parallel`` tasks at once.

A worker that fails (an exception, a kill, a time limit) is a :class:`UnitFailed` naming its log; the others
go on. submitit keeps its scripts, pickles and logs in the launcher's folder.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .checks import check_choice, check_positive

KINDS = ("inline", "local", "slurm")
POLL_SECONDS = 1.0  # how often running workers are checked


class UnitFailed(RuntimeError):
    """A unit's worker failed: one line with who ran it and where its log is."""


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """How units run (nothing here changes a result, so none of it is in a results key).

    ``kind``: ``inline``, ``local`` or ``slurm``. ``parallel``: units at once (``local``: default the number
    of GPUs, else 2; ``slurm``: the job array's ``%N`` limit, default none). ``time_min``: each unit's time
    limit in minutes. SLURM only: ``partition`` (default: the cluster's), ``gpus_per_task`` (0 for a CPU
    partition), ``cpus_per_task``.
    """

    kind: str = "inline"
    parallel: int | None = None
    time_min: int = 24 * 60
    partition: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int = 4

    def __post_init__(self) -> None:
        check_choice("launcher", self.kind, KINDS)
        if self.parallel is not None:
            check_positive("parallel", self.parallel, integer=True)
        check_positive("time_min", self.time_min, integer=True)
        check_positive("cpus_per_task", self.cpus_per_task, integer=True)
        if not isinstance(self.gpus_per_task, int) or self.gpus_per_task < 0:
            raise ValueError(f"gpus_per_task must be an integer >= 0, got {self.gpus_per_task!r}")


@dataclass(eq=False)
class Job:
    """One submitted unit: ``worker`` says who runs it (``"this process"``, ``"local job 4321"``,
    ``"slurm job 88_3"``); ``tag`` is the caller's."""

    tag: Any
    worker: str
    _job: Any = None
    _outcome: tuple[bool, Any] | None = None
    _gpu: int | None = field(default=None, repr=False)


class Launcher:
    """Runs units as ``config`` says; submitit's files go to ``folder`` (needed for ``local`` and ``slurm``)."""

    def __init__(self, config: LaunchConfig, folder: str | Path | None = None, *, gpus: int = 0) -> None:
        self.config = config
        self._free_gpus = list(range(gpus))
        if config.kind == "inline":
            self._executor = None
            return
        import submitit  # only where workers are used

        if folder is None:
            raise ValueError(f"the {config.kind} launcher needs an output folder for its logs")
        self.folder = Path(folder)
        if config.kind == "local":
            self._executor = submitit.LocalExecutor(self.folder)
            self._executor.update_parameters(timeout_min=config.time_min)
        else:
            missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
            if missing:
                raise ValueError(f"--launcher slurm needs SLURM's {' and '.join(missing)} on PATH (run it on the "
                                 f"cluster's login node); elsewhere use --launcher local")
            self._executor = submitit.AutoExecutor(self.folder, cluster="slurm")
            parameters = {"timeout_min": config.time_min, "nodes": 1, "tasks_per_node": 1,
                          "cpus_per_task": config.cpus_per_task, "name": "hebbkit"}
            if config.partition:
                parameters["slurm_partition"] = config.partition
            if config.gpus_per_task:
                parameters["slurm_gres"] = f"gpu:{config.gpus_per_task}"
            if config.parallel:
                parameters["slurm_array_parallelism"] = config.parallel
            self._executor.update_parameters(**parameters)

    @property
    def capacity(self) -> int:
        """How many units may be out at once (``slurm``: all of them, the array limits what runs)."""
        if self.config.kind == "inline":
            return 1
        if self.config.kind == "local":
            return self.config.parallel or len(self._free_gpus) or 2
        return 1 << 30

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, tuple, dict]]) -> list[Job]:
        """Start ``fn(*args, **kwargs)`` for each ``(tag, args, kwargs)`` (``slurm``: as one job array;
        ``inline``: runs them here and now)."""
        if self._executor is None:
            return [Job(tag, "this process", _outcome=(True, fn(*args, **kwargs))) for tag, args, kwargs in calls]
        if self.config.kind == "slurm":
            with self._executor.batch():
                handles = [self._executor.submit(fn, *args, **kwargs) for _, args, kwargs in calls]
            return [Job(tag, f"slurm job {handle.job_id}", handle) for (tag, _, _), handle in zip(calls, handles)]
        jobs = []
        for tag, args, kwargs in calls:
            gpu = self._free_gpus.pop(0) if self._free_gpus else None
            self._executor.update_parameters(gpus_per_node=0 if gpu is None else 1,
                                             visible_gpus=() if gpu is None else (gpu,))
            handle = self._executor.submit(fn, *args, **kwargs)
            jobs.append(Job(tag, f"local job {handle.job_id}", handle, _gpu=gpu))
        return jobs

    def wait(self, jobs: Sequence[Job]) -> list[Job]:
        """Block until at least one of ``jobs`` has finished; return the finished ones."""
        while True:
            finished = [job for job in jobs if job._outcome is not None or job._job.done()]
            if finished or not jobs:
                for job in finished:
                    if job._gpu is not None:
                        self._free_gpus.append(job._gpu)
                        job._gpu = None
                return finished
            time.sleep(POLL_SECONDS)

    @staticmethod
    def result(job: Job) -> Any:
        """A finished unit's return value, or :class:`UnitFailed` (one line: the worker, why, its log)."""
        if job._outcome is not None:
            return job._outcome[1]
        from submitit.core.utils import UncompletedJobError

        try:
            return job._job.result()
        except UncompletedJobError:
            reason = "it ended without a result: killed, or out of memory or time"
        except Exception as error:  # submitit's FailedJobError (the unit raised), its traceback inside
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = next((line for line in reversed(lines) if "Error" in line), lines[0] if lines else repr(error))
        raise UnitFailed(f"{job.worker} failed ({reason[:200]}); its log: {job._job.paths.stderr}")

    def cancel(self, jobs: Sequence[Job]) -> None:
        """Stop the workers of ``jobs`` that still run (on an interrupt)."""
        for job in jobs:
            if job._job is not None and not job._job.done():
                try:
                    job._job.cancel(check=False)
                except Exception:  # noqa: BLE001 — best effort: a job that already ended
                    pass
