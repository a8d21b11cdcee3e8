"""The child's side of the sandbox: its CPU allowance and the job protocol of a reused child.

The job protocol of a reused child (the pool sets REUSE_ENV in its environment):
- stdin: per job a header line `b"<payload bytes> <cpu seconds>\\n"`, then the payload (the
  bytes a one-job child would read up to EOF). EOF instead of a header: no more jobs, exit.
- stdout: the job's lines, then END_OF_JOB (may be reused) or END_OF_LAST_JOB (must not be).
  These two lines are the sandbox's: `on_line` never sees them.
- stderr: the job's stderr, then STDERR_END_OF_JOB, written before the stdout mark; so each
  job's SandboxResult.stderr holds what was written during that job (and, for a child's first
  job, during its start-up).
`read_job` and `end_job` are the child's side of it; `serve_jobs` is the loop over them.
"""

from __future__ import annotations

import errno
import math
import os
import resource
import sys
from collections.abc import Callable
from typing import IO, BinaryIO

REUSE_ENV = "DOCPIPE_SANDBOX_REUSE"
END_OF_JOB = b'{"type": "done", "reuse": true}\n'
END_OF_LAST_JOB = b'{"type": "done", "reuse": false}\n'
STDERR_END_OF_JOB = b"\n[docpipe sandbox: end of job]\n"
# The child reads its per-job CPU allowance from here (see apply_job_cpu_limit).
CPU_ENV = "DOCPIPE_SANDBOX_CPU_SECONDS"


def serving_jobs() -> bool:
    """In the child: whether it was started by a pool that reuses children (job protocol)."""
    return os.environ.get(REUSE_ENV) == "1"


def apply_job_cpu_limit(seconds: int | None = None) -> None:
    """In the child, once a job has arrived: allow `seconds` (default: CPU_ENV) of CPU from now.

    The soft limit becomes (CPU used so far + the allowance), never above the hard limit fixed
    at spawn; going over it ends the process (SIGXCPU). A one-job child lowers its hard limit
    to match. A reused child keeps its hard limit, which was set at spawn to cover all the jobs
    it may serve (an unprivileged process cannot raise it again), and re-arms the soft limit
    for each job. Without an allowance this does nothing.
    """
    raw = seconds if seconds is not None else os.environ.get(CPU_ENV)
    if not raw:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = math.ceil(usage.ru_utime + usage.ru_stime)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + int(raw)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard - 1)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard if serving_jobs() else soft + 1))


def read_job(stream: BinaryIO) -> tuple[bytes, int] | None:
    """In a reused child: the next job's (payload, CPU seconds), or None when there is none."""
    header = stream.readline()
    if not header.strip():
        return None
    size, cpu_seconds = (int(part) for part in header.split())
    payload = stream.read(size)
    if len(payload) < size:
        return None  # the parent went away in the middle of a job
    return payload, cpu_seconds


def end_job(out: IO[str], *, reuse: bool) -> None:
    """In a reused child: mark the end of a job on stderr, then on the protocol stream `out`.
    With reuse=False the parent ends the process anyway; the child may as well exit."""
    sys.stderr.flush()
    os.write(2, STDERR_END_OF_JOB)
    out.write((END_OF_JOB if reuse else END_OF_LAST_JOB).decode())
    out.flush()


def serve_jobs(out: IO[str], run_job: Callable[[bytes], bool], *, max_rss_mb: float) -> int:
    """In a reused child: take jobs until stdin ends. Each job's CPU allowance is armed when it
    arrives; `run_job(payload)` writes the job's records to `out` and says whether this process
    may take another (never after a fatal error); holding `max_rss_mb` or more ends it too."""
    while (job := read_job(sys.stdin.buffer)) is not None:
        payload, cpu_seconds = job
        # The job is here: from now on the child gets the full CPU-time allowance for it.
        apply_job_cpu_limit(cpu_seconds)
        reuse = run_job(payload) and rss_mb() < max_rss_mb
        end_job(out, reuse=reuse)
        if not reuse:
            break
    return 0


def private_stdout() -> IO[str]:
    """In the child: keep the protocol stream to ourselves; all else printed goes to stderr."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def rss_mb() -> float:
    """In the child: its resident memory now, in MB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def limit_reason(exc: OSError) -> str | None:
    """In the child: the sentence for an error a sandbox limit caused, None for any other."""
    if exc.errno == errno.EFBIG:
        _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        return f"Processing wrote a file larger than the limit of {hard // 2**20} MB."
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return f"Processing needed more than the limit of {hard} open files."
    if exc.errno == errno.EAGAIN and isinstance(exc, BlockingIOError):
        return "Processing tried to start more processes than its limit allows."
    return None
