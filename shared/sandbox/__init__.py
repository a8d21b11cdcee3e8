"""Run CPU-heavy or hostile-input work in a child process with rlimits and a wall-clock timeout.

The event loop only awaits the child's pipes. A child that overruns its CPU time, address space
or wall clock is killed, and the caller gets a `SandboxResult` whose `outcome` says how the job
ended (ok, failed, timeout, killed, cancelled) and whose `failure` is a sentence a person can
read. Running children are registered per job, so cancelling a job can kill its work at once.

A WarmPool keeps pre-started children (same rlimits, own process group) blocked on stdin, so
the interpreter start and imports are paid before a job arrives. A pool's child serves several
jobs one after another (`max_jobs_per_child`, like a process pool's max-tasks-per-child; 1 =
one job per process). It is never reused after anything went wrong: a job that was killed,
timed out, was cancelled or ended without its end-of-job mark, or whose child says it must not
go on (after a fatal error: the child decides), ends the process, and the pool starts another
when it needs one. What libraries keep in memory between jobs (caches, a grown heap) is bounded
by the cap on jobs per child and by the child's own checks.

Every guarantee holds per job: the address-space limit is the process's; the CPU limit is
re-armed when each job arrives (`apply_job_cpu_limit`: the soft limit becomes CPU used so far
plus the job's allowance); the wall-clock timeout and `kill_job` apply to the process while it
works for that job, and only then.

Modules: `runner` (the parent's side: run_sandboxed, kill_job, outcomes), `pool` (WarmPool),
`process` (a child's rlimits and stderr), `protocol` (the child's side and the job protocol of
a reused child).
"""

from __future__ import annotations

from shared.sandbox.pool import DEFAULT_JOBS_PER_CHILD, WARM_STARTUP_CPU_SECONDS, WarmPool
from shared.sandbox.process import ChildLimits
from shared.sandbox.protocol import (
    CPU_ENV,
    END_OF_JOB,
    END_OF_LAST_JOB,
    REUSE_ENV,
    STDERR_END_OF_JOB,
    apply_job_cpu_limit,
    end_job,
    limit_reason,
    private_stdout,
    read_job,
    rss_mb,
    serve_jobs,
    serving_jobs,
)
from shared.sandbox.runner import (
    CANCELLED,
    SandboxOutcome,
    SandboxResult,
    describe_exit,
    judge,
    kill_job,
    run_sandboxed,
    running_children,
)
from shared.sandbox.runner import (
    _running as _running,  # the children per job, read by tests: prefer running_children
)

__all__ = [
    "CANCELLED",
    "CPU_ENV",
    "DEFAULT_JOBS_PER_CHILD",
    "END_OF_JOB",
    "END_OF_LAST_JOB",
    "REUSE_ENV",
    "STDERR_END_OF_JOB",
    "WARM_STARTUP_CPU_SECONDS",
    "ChildLimits",
    "SandboxOutcome",
    "SandboxResult",
    "WarmPool",
    "apply_job_cpu_limit",
    "describe_exit",
    "end_job",
    "judge",
    "kill_job",
    "limit_reason",
    "private_stdout",
    "read_job",
    "rss_mb",
    "run_sandboxed",
    "running_children",
    "serve_jobs",
    "serving_jobs",
]
