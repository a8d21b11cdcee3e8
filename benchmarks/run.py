"""`python -m benchmarks.run [--smoke] [--out DIR] [--only NAME,...]`

Starts a private stack (own database, bus prefix, blob dir and ports), runs every benchmark
against it, writes DIR/latest.json and DIR/latest.md, and stops the stack. Every figure is a
ratio against a baseline measured in the same run, or a latency distribution. Exit status 1
when a job failed, a job's text was empty where a baseline found text, or a benchmark crashed;
missed targets are reported, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import latency, ocr_throughput, synthetic, text_throughput
from benchmarks.common import ROOT, BenchStack, bench_stack, machine

RESULTS = ROOT / "benchmarks" / "results"

# Name -> coroutine factory, in running order (the throughput runs first, on an idle stack).
BENCHMARKS = {
    "text": lambda bs, work, smoke: text_throughput.run(bs, work, smoke),
    "ocr": lambda bs, work, smoke: ocr_throughput.run(bs, work, smoke),
    "push": lambda bs, work, smoke: synthetic.push_latency(bs, smoke),
    "bus": lambda bs, work, smoke: synthetic.bus_efficiency(bs, smoke),
    "first_progress": lambda bs, work, smoke: latency.first_progress(bs, smoke),
    "small_jobs": lambda bs, work, smoke: latency.small_behind_big(bs, work, smoke),
}


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
    report: dict[str, Any], bs: BenchStack, name: str, bench: Any, work: Path, smoke: bool
) -> None:
    print(f"[bench] {name} …", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        targets, detail = await bench(bs, work, smoke)
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
        lines += ["| file | pipeline | pypdf | pypdfium2 |", "|---|---|---|---|"]
        for row in text["per_file"]:
            if "recall_pipeline" in row:
                lines.append(
                    f"| {row['file']} | {row['recall_pipeline']} | {row['recall_pypdf']} | "
                    f"{row['recall_pdfium']} |"
                )
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
    report = asyncio.run(run_all(args.smoke, only))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
