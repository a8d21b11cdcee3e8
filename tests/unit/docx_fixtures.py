"""Word documents made by the tests: python-docx for what it can write (sections, headers,
footers, page breaks, comments), raw WordprocessingML for what it cannot (footnotes and
endnotes parts, text boxes, content controls, nested tables). Shared by the unit and the
integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_NAMESPACES = (
    f'xmlns:w="{W_NS}" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
    'xmlns:v="urn:schemas-microsoft-com:vml"'
)
_RT = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
_CT = "application/vnd.openxmlformats-officedocument.wordprocessingml."


def raw(xml: str) -> Any:
    """One WordprocessingML element from its XML (namespaces declared here)."""
    from docx.oxml.parser import parse_xml

    tag_end = xml.index(">")
    head, tail = xml[:tag_end], xml[tag_end:]
    if head.endswith("/"):
        head, tail = head[:-1], "/" + tail
    return parse_xml(f"{head} {_NAMESPACES}{tail}")


def para(text: str) -> str:
    return f"<w:r><w:t xml:space='preserve'>{text}</w:t></w:r>"


def append_body(document: Any, xml: str) -> None:
    """Add a block element to the body, before its final section properties."""
    body = document.element.body
    body.insert(len(body) - 1, raw(xml))


def add_notes_part(document: Any, kind: str, notes: dict[int, str], prolog: str = "") -> None:
    """A footnotes or endnotes part (kind: 'footnote'/'endnote') with Word's two separator
    notes and one note per id; `prolog` goes before the root (a DOCTYPE, for hostile tests)."""
    from docx.opc.packuri import PackURI
    from docx.opc.part import Part

    items = [
        f'<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>',
        f'<w:{kind} w:type="continuationSeparator" w:id="0"><w:p><w:r>'
        f"<w:continuationSeparator/></w:r></w:p></w:{kind}>",
    ]
    for note_id, text in notes.items():
        items.append(
            f'<w:{kind} w:id="{note_id}"><w:p><w:r><w:{kind}Ref/></w:r>'
            f"<w:r><w:t xml:space='preserve'> {text}</w:t></w:r></w:p></w:{kind}>"
        )
    blob = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
        f'<w:{kind}s xmlns:w="{W_NS}">{"".join(items)}</w:{kind}s>'
    ).encode()
    part = Part(PackURI(f"/word/{kind}s.xml"), f"{_CT}{kind}s+xml", blob, document.part.package)
    document.part.relate_to(part, _RT + f"{kind}s")


def text_box(text: str) -> str:
    """A run holding a text box as Word writes it: DrawingML in mc:Choice and the same box
    again as VML in mc:Fallback."""
    content = f"<w:txbxContent><w:p>{para(text)}</w:p></w:txbxContent>"
    return (
        "<w:r><mc:AlternateContent><mc:Choice Requires='wps'><w:drawing><wp:anchor>"
        "<a:graphic><a:graphicData><wps:wsp><wps:txbx>"
        f"{content}</wps:txbx></wps:wsp></a:graphicData></a:graphic></wp:anchor></w:drawing>"
        "</mc:Choice><mc:Fallback><w:pict><v:shape><v:textbox>"
        f"{content}</v:textbox></v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r>"
    )


def table(rows: list[list[str]]) -> str:
    """A table; a cell's text that starts with '<' is block XML put in the cell as it is."""
    out = "<w:tbl>"
    for row in rows:
        out += "<w:tr>"
        for cell in row:
            inner = cell if cell.startswith("<") else f"<w:p>{para(cell)}</w:p>"
            out += f"<w:tc>{inner}</w:tc>"
        out += "</w:tr>"
    return out + "</w:tbl>"


def whole_docx(path: Path) -> Path:
    """Every kind of content a Word document hides from a plain paragraph reader, in order:
    an inline and a block content control, a text box, a nested table, a footnote and an
    endnote reference, a comment, and a Last-Rendered page break that must not cut a page."""
    import docx

    document = docx.Document()
    document.add_heading("Harbour report", level=1)
    append_body(
        document,
        "<w:p>" + para("Tides are ") + "<w:sdt><w:sdtPr><w:alias w:val='Level'/></w:sdtPr>"
        "<w:sdtContent>" + para("rising") + "</w:sdtContent></w:sdt>" + para(" today.") + "</w:p>",
    )
    append_body(
        document,
        "<w:sdt><w:sdtPr/><w:sdtContent><w:p>"
        + para("Inside a block control.")
        + "</w:p></w:sdtContent></w:sdt>",
    )
    append_body(document, "<w:p>" + para("Anchor paragraph.") + text_box("Boxed note") + "</w:p>")
    nested = table([["Inner A", "Inner B"], ["Inner C", "Inner D"]])
    append_body(document, table([["Outer", "<w:p/>" + nested + "<w:p/>"], ["Left", "Right"]]))
    append_body(
        document,
        "<w:p>"
        + para("Ouch")
        + "<w:r><w:footnoteReference w:id='1'/></w:r>"
        + para(" and")
        + "<w:r><w:lastRenderedPageBreak/></w:r>"
        + para(" later")
        + "<w:r><w:endnoteReference w:id='1'/></w:r></w:p>",
    )
    reviewed = document.add_paragraph()
    run = reviewed.add_run("Check the buoy count.")
    document.add_comment(run, text="Count again", author="Ingrid Larsen")
    add_notes_part(document, "footnote", {1: "A tachyon walks into a bar."})
    add_notes_part(document, "endnote", {1: "Fin."})
    document.save(str(path))
    return path


def paged_docx(path: Path) -> Path:
    """Three sections: the first two share their header and footer, the third has its own.
    Section 1 holds an explicit page break inside a paragraph; section 2 starts on a new
    page; section 3 starts continuously (no new page); a paragraph with pageBreakBefore opens
    the last page."""
    import docx
    from docx.enum.section import WD_SECTION
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    first = document.sections[0]
    first.header.paragraphs[0].text = "Acme header"
    first.footer.paragraphs[0].text = "Acme footer"
    document.add_paragraph("Page one text.")
    broken = document.add_paragraph("Before the break.")
    broken.runs[0].add_break(WD_BREAK.PAGE)
    broken.add_run("After the break.")
    document.add_section(WD_SECTION.NEW_PAGE)
    document.add_paragraph("Section two text.")
    third = document.add_section(WD_SECTION.CONTINUOUS)
    third.header.is_linked_to_previous = False
    third.header.paragraphs[0].text = "Annex header"
    document.add_paragraph("Section three, same page.")
    last = document.add_paragraph("Own page.")
    last.paragraph_format.page_break_before = True
    document.save(str(path))
    return path
