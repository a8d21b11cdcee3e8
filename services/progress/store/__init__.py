"""All of progress's SQL: jobs, job_progress, job_pages, job_chunks, job_results and
job_updates (and the admin page's and metrics' reads of them). Writes are set-based (unnest
arrays, executemany): one statement per kind of row whatever the number of jobs or events in
a window. Item writes are first-write-wins and return only the rows they wrote, so a
duplicate moves no counter.
"""

from services.progress.store.base import (
    ACTIVE,
    Conn,
    Deltas,
    add_delta,
    clean,
)
from services.progress.store.items import (
    insert_results,
    item_totals,
    write_chunks_analyzed,
    write_pages_extracted,
    write_pages_ocred,
)
from services.progress.store.jobs import (
    INSERT_UPDATE,
    SAVE_JOB,
    chunk_count,
    job_tenant,
    lock_jobs,
    lock_stall_candidate,
    move_counts,
    read_counts,
    read_counts_many,
    read_job,
    recount_many,
    save_args,
    save_jobs,
    set_revived,
    stall_candidates,
    undo_revive,
)
from services.progress.store.reads import (
    admin_jobs,
    admin_totals,
    finished_job_times,
    job_counts_by_status,
    last_pushed_statuses,
    latest_update,
    like_pattern,
    updates_after,
)

__all__ = [
    "ACTIVE",
    "Conn",
    "Deltas",
    "INSERT_UPDATE",
    "SAVE_JOB",
    "add_delta",
    "admin_jobs",
    "admin_totals",
    "chunk_count",
    "clean",
    "finished_job_times",
    "insert_results",
    "item_totals",
    "job_counts_by_status",
    "job_tenant",
    "last_pushed_statuses",
    "latest_update",
    "like_pattern",
    "lock_jobs",
    "lock_stall_candidate",
    "move_counts",
    "read_counts",
    "read_counts_many",
    "read_job",
    "recount_many",
    "save_args",
    "save_jobs",
    "set_revived",
    "stall_candidates",
    "undo_revive",
    "updates_after",
    "write_chunks_analyzed",
    "write_pages_extracted",
    "write_pages_ocred",
]
