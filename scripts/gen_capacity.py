"""`python -m scripts.gen_capacity [latest.json] [docs/capacity.md]`

Writes docs/capacity.md from the per-page costs that `make bench` measured (the `capacity`
benchmark) and the broker and progress rates of the same run (`progress_rate_vs_raw_consume`).
`make bench` calls it after a run that included `capacity`; a test checks that the committed
document is what this script makes of the committed results.

The arithmetic is plain on purpose: an operator should be able to redo it by hand.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
DOC = ROOT / "docs" / "capacity.md"

SERVICES = ("ingest", "extractor", "ocr", "analyzer", "progress")
VOLUMES = {"1 million": 1_000_000, "100 million": 100_000_000}
# What a day's pages are made of: most documents that reach an AI pipeline are born digital.
MIX = {"text_pdf": 0.8, "scan": 0.2}
# The busiest hour carries this multiple of the day's average rate.
PEAK_FACTOR = 2.0
# Plan cores at this utilisation: queues drain after a burst, and a node can be lost.
UTILISATION = 0.7
# One replica = one pod with one core (the extractor and OCR run that many children).
CORES_PER_REPLICA = 1.0


@dataclass(frozen=True)
class Plan:
    volume: str
    pages_per_day: int
    peak_pages_per_s: float
    cores: dict[str, float]
    replicas: dict[str, int]
    bus_messages_per_s: float
    bus_mb_per_s: float
    db_rows_per_s: float
    db_wal_mb_per_s: float
    db_gb_per_day: float
    blob_gb_per_day: float
    progress_queue_load: float  # the peak event rate / what one queue took in the same run


def mixed(per_page: dict[str, dict[str, Any]], key: str) -> float:
    """A per-page figure over the day's mix of text and scanned pages."""
    return sum(share * float(per_page[kind][key]) for kind, share in MIX.items())


def mixed_cpu(per_page: dict[str, dict[str, Any]], service: str) -> float:
    return sum(
        share * float(per_page[kind]["cpu_seconds_per_page"].get(service, 0.0))
        for kind, share in MIX.items()
    )


def plan(per_page: dict[str, dict[str, Any]], rates: dict[str, float], volume: str) -> Plan:
    pages_per_day = VOLUMES[volume]
    peak = pages_per_day / 86_400 * PEAK_FACTOR
    cores = {s: mixed_cpu(per_page, s) * peak / UTILISATION for s in SERVICES}
    events_per_s = mixed(per_page, "bus_messages_per_page") * peak
    replicas = {s: max(2, math.ceil(cores[s] / CORES_PER_REPLICA)) for s in SERVICES}
    # One progress replica applies at most what it applied in the bus benchmark.
    replicas["progress"] = max(
        replicas["progress"],
        math.ceil(events_per_s / (rates["progress_events_per_s"] * UTILISATION)),
    )
    return Plan(
        volume=volume,
        pages_per_day=pages_per_day,
        peak_pages_per_s=peak,
        cores=cores,
        replicas=replicas,
        bus_messages_per_s=events_per_s,
        bus_mb_per_s=mixed(per_page, "bus_bytes_per_page") * peak / 1e6,
        db_rows_per_s=mixed(per_page, "db_rows_written_per_page") * peak,
        db_wal_mb_per_s=mixed(per_page, "db_wal_bytes_per_page") * peak / 1e6,
        db_gb_per_day=mixed(per_page, "db_bytes_per_page") * pages_per_day / 1e9,
        blob_gb_per_day=mixed(per_page, "blob_bytes_per_page") * pages_per_day / 1e9,
        progress_queue_load=events_per_s / rates["raw_events_per_s"],
    )


def rates_of(report: dict[str, Any]) -> dict[str, float]:
    for t in report["targets"]:
        if t["name"] == "progress_rate_vs_raw_consume":
            return {
                "progress_events_per_s": float(t["progress_events_per_s"]),
                "raw_events_per_s": float(t["raw_events_per_s"]),
            }
    raise SystemExit("latest.json has no progress_rate_vs_raw_consume: run make bench whole")


def _per_page_table(per_page: dict[str, dict[str, Any]]) -> list[str]:
    kinds = list(MIX)
    lines = ["| per page | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for s in SERVICES:
        cells = [f"{per_page[k]['cpu_seconds_per_page'].get(s, 0.0):.4f}" for k in kinds]
        lines.append(f"| CPU seconds, {s} | " + " | ".join(cells) + " |")
    for key, label in (
        ("bus_messages_per_page", "bus messages"),
        ("bus_bytes_per_page", "bus bytes"),
        ("db_rows_written_per_page", "PostgreSQL rows written"),
        ("db_bytes_per_page", "PostgreSQL bytes kept"),
        ("db_wal_bytes_per_page", "PostgreSQL WAL bytes"),
        ("blob_bytes_per_page", "blob bytes"),
    ):
        lines.append(f"| {label} | " + " | ".join(str(per_page[k][key]) for k in kinds) + " |")
    lines.append(
        "| (pages measured) | " + " | ".join(str(per_page[k]["pages"]) for k in kinds) + " |"
    )
    return lines


def _plan_table(plans: list[Plan]) -> list[str]:
    lines = ["| | " + " | ".join(f"{p.volume} pages/day" for p in plans) + " |"]
    lines.append("|---" * (len(plans) + 1) + "|")

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("peak pages/s", [f"{p.peak_pages_per_s:,.1f}" for p in plans])
    for s in SERVICES:
        row(f"{s}: cores / replicas", [f"{p.cores[s]:,.1f} / {p.replicas[s]}" for p in plans])
    row(
        "bus: messages/s, MB/s",
        [f"{p.bus_messages_per_s:,.0f}, {p.bus_mb_per_s:,.2f}" for p in plans],
    )
    row(
        "progress queue load (1.0 = one queue's measured rate)",
        [f"{p.progress_queue_load:.2f}" for p in plans],
    )
    row(
        "PostgreSQL: rows/s, WAL MB/s",
        [f"{p.db_rows_per_s:,.0f}, {p.db_wal_mb_per_s:,.2f}" for p in plans],
    )
    row("PostgreSQL growth GB/day (before retention)", [f"{p.db_gb_per_day:,.1f}" for p in plans])
    row("blob store growth GB/day (before retention)", [f"{p.blob_gb_per_day:,.1f}" for p in plans])
    return lines


def render(report: dict[str, Any]) -> str:
    per_page = report["details"]["capacity"]["per_page"]
    rates = rates_of(report)
    plans = [plan(per_page, rates, v) for v in VOLUMES]
    big = plans[-1]
    lines = [
        "# Capacity on paper",
        "",
        "Generated by `python -m scripts.gen_capacity` from `benchmarks/results/latest.json` "
        f"(run {report['started_at']}); do not edit by hand. `make bench` measures the per-page "
        "costs (benchmark `capacity`: the corpus text PDFs and scans through the whole stack, "
        "default options, built-in analysis) and rewrites this page.",
        "",
        "## What one page costs (measured)",
        "",
        *_per_page_table(per_page),
        "",
        f"Measured in the same run: one progress replica applied "
        f"{rates['progress_events_per_s']:,.0f} events/s, and one queue was consumed and acked at "
        f"{rates['raw_events_per_s']:,.0f} messages/s by a bare aio-pika consumer (both on this "
        f"machine: {report['machine']['cores']} cores). The WAL is the server's: whatever else "
        "wrote to it during the run counts too, so `make bench` runs on an otherwise idle "
        "machine. CPU includes each service's idle work during the run (polls, metrics).",
        "",
        "## What a day needs (derived)",
        "",
        f"Assumptions: a day's pages are {int(MIX['text_pdf'] * 100)} % text PDF and "
        f"{int(MIX['scan'] * 100)} % scans; the busiest hour runs at {PEAK_FACTOR:g}× the day's "
        f"average; cores are planned at {int(UTILISATION * 100)} % utilisation; one replica is one "
        "core, and every service keeps at least two replicas (a node can go). The LLM's own "
        "cost is not here: it is the model server's (or the provider's) tokens per second.",
        "",
        *_plan_table(plans),
        "",
        "## What saturates first, and what the design does then",
        "",
        f"- **The progress queue.** Every event goes through one `progress` queue, and one "
        f"RabbitMQ queue is served by one Erlang process: at 100 million pages a day the peak "
        f"is {big.progress_queue_load:.1f}× what one queue took here. Adding progress replicas "
        "does not help past that point. The design's answer is to shard progress by job: a "
        "consistent-hash exchange (`x-consistent-hash`, keyed by job id) in front of N progress "
        "queues, each with its own replicas, keeps a job's events in one queue (so its order "
        "and its window batching hold) while the shards share the load. The WebSocket fan-out "
        "between replicas (docs/decisions/1070) already lets a client connect anywhere.",
        "- **PostgreSQL's write rate.** All of progress writes into one primary: "
        f"{big.db_rows_per_s:,.0f} rows/s and {big.db_wal_mb_per_s:,.1f} MB/s of WAL at the "
        "100-million peak. The window batching already folds a job's events into one row "
        "update; past one primary, the job tables partition by job id (the same key as the "
        "progress shards), each shard on its own primary.",
        "- **CPU for extraction and OCR** scales out with replicas (KEDA on queue depth, "
        "deploy/k8s): it is the largest bill, not a ceiling.",
        "- **The blob store** grows with the documents kept: retention (`DOCPIPE_RETENTION_*`) "
        "bounds it; on S3 it is not a throughput limit at these rates.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    source = Path(args[0]) if args else RESULTS
    target = Path(args[1]) if len(args) > 1 else DOC
    report = json.loads(source.read_text())
    if "capacity" not in report.get("details", {}):
        print(f"{source} has no capacity figures: run make bench (or --only capacity,bus)")
        return 2
    target.write_text(render(report))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
