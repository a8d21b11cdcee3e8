"""Tables as data through the whole running pipeline (HTTP in, sandboxed extraction,
progress, result out): the result's pages carry their tables' rows, and the Markdown export
renders them as Markdown tables."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.integration.stack_client import StackClient
from tests.unit import office_fixtures as make
from tests.unit import table_fixtures as tables

pytestmark = pytest.mark.integration


async def markdown(stack: StackClient, job_id: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(
            f"{stack.api}/v1/jobs/{job_id}/result",
            params={"format": "markdown"},
            headers=stack.headers(),
        )
    assert response.status_code == 200, response.text
    return response.text


async def test_tables_in_the_result_and_its_markdown(stack: StackClient, tmp_path: Path) -> None:
    paths = [
        tables.ruled_table_pdf(tmp_path / "berths.pdf"),
        tables.docx_with_table(tmp_path / "plan.docx"),
        make.xlsx_file(tmp_path / "sales.xlsx"),
        tables.long_csv(tmp_path / "ships.csv", rows=3000),
    ]
    jobs = await asyncio.gather(*(stack.submit_ok(p, ocr="never") for p in paths))
    finals = await asyncio.gather(*(stack.wait(j, timeout=120) for j in jobs))
    assert [f["status"] for f in finals] == ["completed"] * 4, finals
    pdf, docx, xlsx, csv = [(await stack.result(j)).json() for j in jobs]

    # The PDF's ruled table on page 1, none on page 2 (no `tables` key where there are none).
    assert pdf["pages"][0]["tables"] == [{"index": 0, "rows": tables.HARBOUR_ROWS}]
    assert "tables" not in pdf["pages"][1]
    assert docx["pages"][0]["tables"][0]["rows"] == [["Berth plan"], *tables.HARBOUR_ROWS]
    assert [p["tables"][0]["rows"][0] for p in xlsx["pages"]] == [
        ["Region", "Revenue", "Quarter"],
        ["Name", "Role"],
    ]
    # The CSV's one table continues over its pages, every row once and in order.
    assert len(csv["pages"]) > 2
    rows = [row for page in csv["pages"] for row in page["tables"][0]["rows"]]
    assert len(rows) == 3001 and rows[0] == ["ship", "port", "cargo"]
    assert rows[-1] == ["Vessel 3000", "Port 8", "Cargo lot 3000"]
    assert csv["pages"][1]["tables"][0]["first_row"] == len(csv["pages"][0]["tables"][0]["rows"])

    pdf_md = await markdown(stack, jobs[0])
    assert (
        "| Vessel | Berth | Tonnage |\n|---|---|---|\n| Aurora Borealis | North 4 | 12500 |"
        in pdf_md
    )
    docx_md = await markdown(stack, jobs[1])
    assert "| Vessel | Berth | Tonnage |\n| Aurora Borealis | North 4 | 12500 |" in docx_md
    assert "\nAurora Borealis | North 4 | 12500\n" not in docx_md  # the flattened line replaced
    csv_md = await markdown(stack, jobs[3])
    page_two = csv_md.split("<!-- page 2 -->", 1)[1].split("<!-- page 3 -->", 1)[0]
    assert page_two.lstrip().startswith("| ship | port | cargo |\n|---|---|---|\n| Vessel ")


async def test_a_job_may_leave_pdf_tables_out(
    stack: StackClient, tmp_path: Path, db_pool: asyncpg.Pool
) -> None:
    """The suite's stacks find PDF tables (DOCPIPE_PDF_TABLES=true); a job that says
    pdf_tables=false gets the table's text as lines and no `tables`, and its row keeps the
    choice (an Idempotency-Key replayed with another value is refused: test_ingest_api)."""
    pdf = tables.ruled_table_pdf(tmp_path / "berths.pdf").read_bytes()
    job = await stack.post_job(
        pdf, name="berths.pdf", ocr="never", pdf_tables="false", force="true"
    )
    final = await stack.wait(job["job_id"], timeout=120)
    assert final["status"] == "completed", final
    result = (await stack.result(job["job_id"])).json()
    assert "tables" not in result["pages"][0]
    assert "Aurora Borealis" in result["pages"][0]["text"]
    stored = await db_pool.fetchval(
        "SELECT pdf_tables FROM jobs WHERE job_id = $1", uuid.UUID(job["job_id"])
    )
    assert stored is False
