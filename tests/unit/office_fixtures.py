"""Office, e-book, email, RTF and Markdown documents made by the tests themselves (openpyxl,
python-pptx, odfpy, ebooklib, the stdlib email module, hand-written RTF and Markdown), and
hostile ones (ZIP bombs, nested archives, a sheet of a million empty rows, an email of a
thousand attachments). Shared by the unit and the integration tests."""

from __future__ import annotations

import zipfile
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from tests.unit.extractor_fixtures import docx_file, text_pdf

CREATED = datetime(2024, 3, 5, 9, 30, 0)


def xlsx_file(path: Path) -> Path:
    """Two sheets (Sales, Staff) and document properties."""
    import openpyxl

    book = openpyxl.Workbook()
    sales = book.active
    assert sales is not None
    sales.title = "Sales"
    sales.append(["Region", "Revenue", "Quarter"])
    sales.append(["North", 1200.0, "Q1"])
    sales.append(["South", 980.5, "Q1"])
    staff = book.create_sheet("Staff")
    staff.append(["Name", "Role"])
    staff.append(["Ingrid Larsen", "Accountant"])
    book.properties.title = "Regional sales"
    book.properties.creator = "Finance Team"
    book.properties.subject = "Quarterly figures"
    book.properties.created = CREATED
    book.properties.language = "en-GB"
    book.save(path)
    return path


def pptx_file(path: Path) -> Path:
    """Two slides with titles, a body, a table and speaker notes."""
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Launch plan"
    first.placeholders[1].text = "Ship the harbour release in May"
    notes = first.notes_slide.notes_text_frame
    assert notes is not None
    notes.text = "Remind everyone about the embargo"
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Budget"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    table.cell(0, 0).text = "Item"
    table.cell(0, 1).text = "Cost"
    table.cell(1, 0).text = "Lighthouse"
    table.cell(1, 1).text = "4500"
    deck.core_properties.title = "Harbour launch"
    deck.core_properties.author = "Product Office"
    deck.core_properties.created = CREATED
    deck.save(str(path))
    return path


def _odf_meta(document: object, title: str) -> None:
    from odf import dc, meta

    document.meta.addElement(dc.Title(text=title))  # type: ignore[attr-defined]
    document.meta.addElement(dc.Creator(text="Odile Martin"))  # type: ignore[attr-defined]
    document.meta.addElement(dc.Language(text="fr-FR"))  # type: ignore[attr-defined]
    document.meta.addElement(meta.CreationDate(text="2024-03-05T09:30:00"))  # type: ignore[attr-defined]


def odt_file(path: Path) -> Path:
    from odf import table, text
    from odf.opendocument import OpenDocumentText

    document = OpenDocumentText()
    _odf_meta(document, "Meeting minutes")
    document.text.addElement(text.H(outlinelevel=1, text="Minutes of the harbour board"))
    document.text.addElement(text.P(text="The board approved the new pier."))
    items = text.List()
    for entry in ("Repaint the crane", "Order new buoys"):
        item = text.ListItem()
        item.addElement(text.P(text=entry))
        items.addElement(item)
    document.text.addElement(items)
    grid = table.Table(name="Votes")
    for cells in (("Member", "Vote"), ("Anna", "Yes")):
        row = table.TableRow()
        for value in cells:
            cell = table.TableCell()
            cell.addElement(text.P(text=value))
            row.addElement(cell)
        grid.addElement(row)
    document.text.addElement(grid)
    document.save(str(path))
    return path


def ods_file(path: Path) -> Path:
    from odf import table, text
    from odf.opendocument import OpenDocumentSpreadsheet

    document = OpenDocumentSpreadsheet()
    _odf_meta(document, "Inventory")
    for name, rows in (
        ("Stock", [("Item", "Count"), ("Rope", "12"), ("Anchor", "3")]),
        ("Suppliers", [("Name", "City"), ("Nordic Marine", "Bergen")]),
    ):
        sheet = table.Table(name=name)
        for cells in rows:
            row = table.TableRow()
            for value in cells:
                cell = table.TableCell(valuetype="string")
                cell.addElement(text.P(text=value))
                row.addElement(cell)
            sheet.addElement(row)
        # A sheet's tail of empty rows, repeated as spreadsheets write it.
        sheet.addElement(table.TableRow(numberrowsrepeated=1_048_000))
        document.spreadsheet.addElement(sheet)
    document.save(str(path))
    return path


def odp_file(path: Path) -> Path:
    from odf import draw, presentation, style, text
    from odf.namespaces import PRESENTATIONNS
    from odf.opendocument import OpenDocumentPresentation

    document = OpenDocumentPresentation()
    _odf_meta(document, "Harbour tour")
    layout = style.PageLayout(name="layout")
    document.automaticstyles.addElement(layout)
    master = style.MasterPage(name="master", pagelayoutname=layout)
    document.masterstyles.addElement(master)
    for heading, note in (("Welcome aboard", "Smile at the guests"), ("Safety rules", "")):
        page = draw.Page(masterpagename=master)
        frame = draw.Frame(width="20cm", height="3cm", x="1cm", y="1cm")
        frame.setAttrNS(PRESENTATIONNS, "class", "title")  # the slide's title frame
        box = draw.TextBox()
        box.addElement(text.P(text=heading))
        frame.addElement(box)
        page.addElement(frame)
        if note:
            notes = presentation.Notes()
            notes_frame = draw.Frame(width="20cm", height="3cm", x="1cm", y="1cm")
            notes_box = draw.TextBox()
            notes_box.addElement(text.P(text=note))
            notes_frame.addElement(notes_box)
            notes.addElement(notes_frame)
            page.addElement(notes)
        document.presentation.addElement(page)
    document.save(str(path))
    return path


def epub_file(path: Path) -> Path:
    """Three chapters in reading order, with title, author and language."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("docpipe-test-book")
    book.set_title("The Lighthouse Keeper")
    book.set_language("en")
    book.add_author("Maren Holt")
    chapters = []
    for number, body in enumerate(
        (
            "The keeper climbed the stairs every evening to light the lamp.",
            "A storm rolled in from the west and the ships sought the harbour.",
            "At dawn the sea was calm and the keeper finally slept.",
        ),
        start=1,
    ):
        chapter = epub.EpubHtml(title=f"Chapter {number}", file_name=f"ch{number}.xhtml")
        chapter.content = f"<h1>Chapter {number}</h1><p>{body}</p>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.spine = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(path), book)
    return path


def eml_message(subject: str = "Invoice for March") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Clara Berg <clara@example.com>"
    message["To"] = "accounts@example.org"
    message["Subject"] = subject
    message["Date"] = format_datetime(CREATED.astimezone())
    message["Content-Language"] = "en"
    message.set_content("Hello,\n\nplease find the invoice and the order list attached.\n")
    return message


def eml_file(path: Path, work: Path) -> Path:
    """A message with a text body, an HTML alternative, and two attachments: a PDF of two
    pages and an XLSX of two sheets."""
    message = eml_message()
    message.add_alternative(
        "<html><body><p>Hello, please find the invoice.</p></body></html>", subtype="html"
    )
    pdf = text_pdf(work / "invoice.pdf", ["Invoice 4471 total 990 EUR", "Payment terms 30 days"])
    message.add_attachment(
        pdf.read_bytes(), maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    xlsx = xlsx_file(work / "orders.xlsx")
    message.add_attachment(
        xlsx.read_bytes(),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        filename="orders.xlsx",
    )
    path.write_bytes(bytes(message))
    return path


def rtf_file(path: Path) -> Path:
    path.write_bytes(
        b"{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times New Roman;}}"
        b"{\\info{\\title Tide tables}{\\author Jonas Weber}"
        b"{\\creatim\\yr2024\\mo3\\dy5\\hr9\\min30}}"
        b"\\f0\\fs24 High tide at {\\b 06:12} in the harbour.\\par "
        b"Caf\\'e9 opens after low tide.\\par }"
    )
    return path


MARKDOWN = """# Release notes

The harbour app gets a new map.

## Changes

- Faster tide charts
- A [map](https://example.com/map) of every pier

## Known issues

Nothing serious.
"""


def markdown_file(path: Path) -> Path:
    path.write_text(MARKDOWN)
    return path


# --- hostile -------------------------------------------------------------------------------


def zip_bomb_xlsx(path: Path, inflated_mb: int = 24) -> Path:
    """An XLSX-shaped package whose sheet inflates to `inflated_mb` MB of repetitive XML, a
    thousand times its size on disk (a real bomb goes on for gigabytes: the ratio is what
    gives it away)."""
    chunk = b"<row/>" * (1024 * 1024 // 6)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _XLSX_TYPES)
        zf.writestr("xl/workbook.xml", _WORKBOOK)
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            for _ in range(inflated_mb):
                sheet.write(chunk)
    return path


def zip_bomb_docx(path: Path, inflated_mb: int = 24) -> Path:
    """A DOCX whose one extra part inflates more than 500 times."""
    base = docx_file(path.with_suffix(".base.docx"))
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        with dst.open("word/media/padding.bin", "w", force_zip64=True) as padding:
            for _ in range(inflated_mb):
                padding.write(bytes(1024 * 1024))
    return path


def nested_archive(path: Path, depth: int = 30) -> Path:
    """A ZIP inside a ZIP inside a ZIP ..., `depth` deep, the outer one named .xlsx."""
    data = b"innermost"
    for level in range(depth):
        inner = path.with_name(f"level{level}.zip")
        with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"level{level}.zip" if level else "data.txt", data)
        data = inner.read_bytes()
        inner.unlink()
    path.write_bytes(data)
    return path


def nested_eml(path: Path, depth: int = 12) -> Path:
    """A message that forwards a message that forwards a message ..., `depth` deep."""
    message = eml_message("Innermost")
    for level in range(depth):
        outer = eml_message(f"Forward {level}")
        outer.add_attachment(message)
        message = outer
    path.write_bytes(bytes(message))
    return path


def eml_many_attachments(path: Path, count: int = 1000) -> Path:
    message = eml_message("A thousand receipts")
    for number in range(count):
        message.add_attachment(
            f"Receipt {number}\n".encode(),
            maintype="text",
            subtype="plain",
            filename=f"r{number}.txt",
        )
    path.write_bytes(bytes(message))
    return path


_XLSX_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
)


def xlsx_million_empty_rows(path: Path, rows: int = 1_000_000) -> Path:
    """A one-sheet XLSX written as XML straight into the ZIP: two rows with text, then
    `rows` empty rows that declare the sheet A1:C<rows>."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _XLSX_TYPES)
        zf.writestr("_rels/.rels", _ROOT_RELS)
        zf.writestr("xl/workbook.xml", _WORKBOOK)
        zf.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(
                b'<?xml version="1.0" encoding="UTF-8"?>'
                b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                + f'<dimension ref="A1:C{rows + 2}"/><sheetData>'.encode()
                + b'<row r="1"><c r="A1" t="inlineStr"><is><t>Ledger</t></is></c></row>'
                + b'<row r="2"><c r="A2" t="inlineStr"><is><t>Opening balance</t></is></c>'
                + b'<c r="B2"><v>100</v></c></row>'
            )
            batch = 10_000
            for start in range(3, rows + 3, batch):
                sheet.write(
                    "".join(
                        f'<row r="{r}"/>' for r in range(start, min(start + batch, rows + 3))
                    ).encode()
                )
            sheet.write(b"</sheetData></worksheet>")
    return path
