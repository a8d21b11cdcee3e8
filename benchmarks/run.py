"""`python -m benchmarks.run [--smoke] [--out DIR] [--only NAME,...]`

Starts a private stack (own database, bus prefix, blob dir and ports), runs every benchmark
against it, writes DIR/latest.json and DIR/latest.md, and stops the stack. Every figure is a
ratio against a baseline measured in the same run, or a latency distribution. Exit status 1
when a job failed, a job's text was empty where a baseline found text, or a benchmark crashed;
missed targets are reported, not fatal. Exit status 2, before any stack starts, when a
selected benchmark's corpus folder is absent or empty: the message says where the corpus goes
(DOCPIPE_CORPUS). `push`, `bus` and `memory` need no corpus: they generate their own input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import (
    batch_follow,
    capacity,
    dedup,
    eta,
    fair_share,
    latency,
    llm_analyze,
    memory,
    ocr_throughput,
    replicas,
    synthetic,
    text_throughput,
)
from benchmarks.common import ROOT, BenchStack, bench_stack, corpus_dir, machine
from scripts import gen_capacity
from scripts.gen_capacity import DOC

RESULTS = ROOT / "benchmarks" / "results"

Result = tuple[list[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: how it runs, and the corpus folders it reads (none: it generates its
    own events)."""

    run: Callable[[BenchStack, Path, bool], Awaitable[Result]]
    corpus: tuple[str, ...] = ()


# In running order (the throughput runs first, on an idle stack).
BENCHMARKS = {
    "text": Benchmark(text_throughput.run, ("pdf_text",)),
    "ocr": Benchmark(ocr_throughput.run, ("pdf_scanned",)),
    "push": Benchmark(lambda bs, work, smoke: synthetic.push_latency(bs, smoke)),
    "bus": Benchmark(lambda bs, work, smoke: synthetic.bus_efficiency(bs, smoke)),
    # Replicas (issue 13): a second progress replica, then extractor replicas, beside the stack.
    "push_replicas": Benchmark(replicas.push_two_replicas),
    "extractor_replicas": Benchmark(replicas.extractor_replicas, ("pdf_text",)),
    "first_progress": Benchmark(
        lambda bs, work, smoke: latency.first_progress(bs, smoke), ("pdf_text",)
    ),
    "small_jobs": Benchmark(latency.small_behind_big, ("pdf_text",)),
    "batch_follow": Benchmark(batch_follow.run, ("pdf_text",)),
    "dedup": Benchmark(dedup.duplicate_of_long_pdf, ("pdf_text",)),
    "llm": Benchmark(llm_analyze.run),
    "eta": Benchmark(eta.run, ("pdf_text", "pdf_scanned")),
    # Per-page costs for docs/capacity.md (scripts/gen_capacity.py), on counters of its own.
    "capacity": Benchmark(capacity.run, ("pdf_text", "pdf_scanned")),
    "fair_share": Benchmark(fair_share.run, ("pdf_text",)),
    # Last: its large documents would leave the services' heaps grown for the ones after it.
    "memory": Benchmark(memory.run),
}


def missing_corpus(names: list[str]) -> str | None:
    """A sentence saying where the corpus goes when a folder that one of the named benchmarks
    reads is absent or empty; None when all of them can run."""
    root = corpus_dir()
    missing = sorted(
        {
            folder
            for name in names
            for folder in BENCHMARKS[name].corpus
            if not any((root / folder).glob("*"))
        }
    )
    if not missing:
        return None
    needing = [n for n in names if set(BENCHMARKS[n].corpus) & set(missing)]
    without = [n for n, b in BENCHMARKS.items() if not b.corpus]
    return (
        f"No corpus for the benchmarks {', '.join(needing)}: {root} has no documents in "
        f"{' or '.join(f + '/' for f in missing)}. Set DOCPIPE_CORPUS to the corpus folder "
        f"(the one that holds MANIFEST.tsv, pdf_text/ and pdf_scanned/), or run only the "
        f"benchmarks that generate their own events: --only {','.join(without)}."
    )


async def run_all(smoke: bool, only: list[str] | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": smoke,
        "machine": machine(),
        "targets": [],
        "details": {},
        "failures": [],
    }
    with tempfile.TemporaryDirectory(prefix="docpipe-bench-") as tmp:
        work = Path(tmp)
        async with bench_stack(log_dir=work / "logs") as bs:
            for name, bench in BENCHMARKS.items():
                if only and name not in only:
                    continue
                await _one(report, bs, name, bench, work, smoke)
            report["failures"] += bs.failures
            report["service_restarts"] = bs.stack.deaths()
            if bs.stack.deaths():
                report["failures"].append(f"services died: {bs.stack.deaths()}")
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return report


async def _one(
    report: dict[str, Any], bs: BenchStack, name: str, bench: Benchmark, work: Path, smoke: bool
) -> None:
    print(f"[bench] {name} …", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        targets, detail = await bench.run(bs, work, smoke)
    except Exception as exc:  # one crashed benchmark is reported, the rest run
        traceback.print_exc()
        report["failures"].append(f"{name}: crashed: {type(exc).__name__}: {exc}")
        return
    report["targets"] += targets
    report["details"][name] = {**detail, "seconds": round(time.monotonic() - started, 1)}
    for t in targets:
        mark = "met" if t["met"] else "MISSED"
        print(f"[bench]   {t['name']}: {t['value']} ({t['target']}) {mark}", file=sys.stderr)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# docpipe benchmarks" + (" (smoke)" if report["smoke"] else ""),
        "",
        f"Run {report['started_at']} → {report['finished_at']}.",
        "",
        f"Machine: {m['cores']} cores, {m['memory_gb']} GB RAM, {m['cpu_model']}; "
        f"{m['os']}; Python {m['python']}; CLI {m['tesseract']} (the OCR baseline), "
        f"in the OCR service {m.get('tesseract_in_service')}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        "The stack runs with its default settings except the log level: WARNING, not INFO (one "
        "JSON log line per message would be part of every figure). Nothing else runs on the "
        "machine during the run unless the details say so.",
        "",
        "| target | value | goal | met |",
        "|---|---|---|---|",
    ]
    for t in report["targets"]:
        lines.append(
            f"| {t['name']} | {t['value']} | {t['target']} | {'yes' if t['met'] else 'NO'} |"
        )
    lines += ["", "## Details", ""]
    for t in report["targets"]:
        extra = {k: v for k, v in t.items() if k not in ("name", "value", "target", "met")}
        if extra:
            lines.append(f"- **{t['name']}**: `{json.dumps(extra)}`")
    text = report["details"].get("text", {})
    if text.get("per_file"):
        lines += ["", "### Text quality per file (word recall)", ""]
        lines += [
            "| file | pipeline ocr=never | pipeline defaults | pypdf | pypdfium2 | pdfminer |",
            "|---|---|---|---|---|---|",
        ]
        for row in text["per_file"]:
            if "recall_pipeline" in row:
                lines.append(
                    f"| {row['file']} | {row['recall_pipeline']} | {row.get('recall_defaults')} "
                    f"| {row['recall_pypdf']} | {row['recall_pdfium']} | "
                    f"{row.get('recall_pdfminer')} |"
                )
    if "memory" in report["details"]:
        lines += memory.markdown_section(report["details"]["memory"])
    if report["failures"]:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in report["failures"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--smoke", action="store_true", help="tiny inputs, for the test suite")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json/md go")
    parser.add_argument("--only", default="", help="comma list of: " + ", ".join(BENCHMARKS))
    args = parser.parse_args(argv)
    only = [o.strip() for o in args.only.split(",") if o.strip()] or None
    unknown = sorted(set(only or ()) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    # Checked before the stack starts: a missing corpus ends the run at once, with the reason.
    problem = missing_corpus(only or list(BENCHMARKS))
    if problem:
        print(f"[bench] {problem}", file=sys.stderr)
        return 2
    report = asyncio.run(run_all(args.smoke, only))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    if "capacity" in report["details"] and "bus" in report["details"]:
        # docs/capacity.md follows the committed results (a test checks they agree).
        capacity_doc = DOC if args.out == RESULTS else args.out / "capacity.md"
        gen_capacity.main([str(args.out / "latest.json"), str(capacity_doc)])
    print(markdown(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
