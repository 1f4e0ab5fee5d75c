"""PDF text extraction: PDFium (pypdfium2) against pypdf, on the shared fixtures and generated PDFs.

    python bench/pdf_parsers.py [--rounds 3] [--quick] [--no-record]

Both readers are the product's own functions (``documents.parsing.read_pdf_pdfium`` and
``read_pdf_pypdf``), run in this process on the same files, taking turns (the order alternates
each round). The corpus:

- every PDF in ``../shared/data/fixtures`` (when present);
- generated with fpdf2: text reports of 1, 20 and 200 pages, a Unicode (DejaVu) report, tables,
  a blank page, a scan (an image of text);
- encrypted copies written by pypdf: RC4-128 and AES-256 with an empty user password (readable,
  only permissions set) and AES-256 with a password (must be reported password-protected);
- damaged copies of the 20-page report: cut at 50% and 90%, startxref removed, the xref table's
  offsets wrong, junk before the header, the trailer's /Root removed.

Robustness: per file, what each reader got (text, no text, password, damaged) and how much text;
"readable" means a reader returned text. Agreement: the share of one reader's words the other also
found (on the files both read). Speed: pages per second over the readable generated and shared
files, median of the rounds. Appends a table to bench/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import re
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

import _common  # noqa: E402

from documents.exceptions import IngestError  # noqa: E402
from documents.parsing import read_pdf_pdfium, read_pdf_pypdf  # noqa: E402

READERS = {"pdfium": read_pdf_pdfium, "pypdf": read_pdf_pypdf}
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
WORDS = ("retrieval augmented generation answers questions from the documents a team uploads with citations "
         "every chunk keeps its page and heading so that an answer can point at its source").split()


def report(pages: int, *, unicode: bool = False) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    if unicode and FONT.exists():
        pdf.add_font("DejaVu", fname=str(FONT))
        pdf.set_font("DejaVu", size=11)
    else:
        pdf.set_font("helvetica", size=11)
    for number in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Section {number + 1}. " + (" ".join(WORDS) + ". ") * 12, new_x="LMARGIN", new_y="NEXT")
        if unicode:
            pdf.multi_cell(0, 6, "Grüße aus Köln, naïve café, Ελληνικά, кириллица, ß ≠ ss, 25 € per day.")
    return bytes(pdf.output())


def tables() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    pdf.add_page()
    with pdf.table() as table:
        for row in [["Grade", "Budget", "Travel"]] + [[f"Level {n}", f"{n * 1000} EUR", "train"] for n in range(1, 30)]:
            cells = table.row()
            for value in row:
                cells.cell(value)
    return bytes(pdf.output())


def blank() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    return bytes(pdf.output())


def scan() -> bytes:
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(image)
    for line in range(20):
        draw.text((40, 40 + line * 35), f"Scanned line {line + 1}", fill="black")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(image, x=10, y=10, w=190)
    return bytes(pdf.output())


def encrypted(data: bytes, algorithm: str, password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def damaged(data: bytes) -> dict[str, bytes]:
    xref = data.rfind(b"\nxref")
    wrong_offsets = data[:xref] + re.sub(rb"\n(\d{10}) 00000 n", lambda m: b"\n%010d 00000 n" % (int(m[1]) + 7),
                                         data[xref:])
    return {
        "cut at 50%": data[: len(data) // 2],
        "cut at 90%": data[: len(data) * 9 // 10],
        "startxref removed": data[: data.rfind(b"startxref")],
        "xref offsets wrong": wrong_offsets,
        "junk before the header": b"\x00\x01JUNK" * 20 + data,
        "trailer without /Root": re.sub(rb"/Root \d+ 0 R", b"", data),
    }


def corpus(quick: bool) -> list[tuple[str, str, bytes]]:
    """(group, name, bytes): group is "generated", "encrypted", "damaged" or "shared"."""
    twenty = report(20)
    files = [
        ("generated", "report, 1 page", report(1)),
        ("generated", "report, 20 pages", twenty),
        ("generated", "report, Unicode, 10 pages", report(10, unicode=True)),
        ("generated", "tables", tables()),
        ("generated", "blank page", blank()),
        ("generated", "scan (image only)", scan()),
    ]
    if not quick:
        files.append(("generated", "report, 200 pages", report(200)))
    files += [
        ("encrypted", "RC4-128, empty user password", encrypted(twenty, "RC4-128", "")),
        ("encrypted", "AES-256, empty user password", encrypted(twenty, "AES-256", "")),
        ("encrypted", "AES-256, password", encrypted(twenty, "AES-256", "s3cret")),
    ]
    files += [("damaged", name, data) for name, data in damaged(twenty).items()]
    shared = _common.SHARED / "data" / "fixtures"
    for path in sorted(shared.glob("*.pdf")) if shared.is_dir() else []:
        files.append(("shared", path.name, path.read_bytes()))
    return files


def run(reader, path: Path) -> tuple[str, int, int, float, list[str]]:
    """(outcome, pages, characters, seconds, words)."""
    started = time.perf_counter()
    try:
        text = reader(path, max_pages=100_000)
    except IngestError as error:
        return type(error).__name__, 0, 0, time.perf_counter() - started, []
    except Exception as error:  # noqa: BLE001 — the bench records what a reader does with any file
        return f"crash: {type(error).__name__}", 0, 0, time.perf_counter() - started, []
    seconds = time.perf_counter() - started
    joined = "\n".join(text.pages)
    chars = len(joined.strip())
    outcome = "text" if chars else ("no text" if not text.failed else "pages failed")
    return outcome, len(text.pages), chars, seconds, re.findall(r"\w+", joined.lower())


def overlap(a: list[str], b: list[str]) -> float:
    """The share of a's distinct words that b also has."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa) if sa else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer, smaller files, one round (CI)")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    files = corpus(args.quick)
    results: dict[tuple[str, str], list] = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, (group, name, data) in enumerate(files):
            path = Path(folder) / f"{index}.pdf"
            path.write_bytes(data)
            paths.append((group, name, path))
        for round_number in range(args.rounds):
            order = list(READERS) if round_number % 2 == 0 else list(reversed(READERS))
            for _group, name, path in paths:
                for reader_name in order:
                    outcome, pages, chars, seconds, words = run(READERS[reader_name], path)
                    entry = results.setdefault((name, reader_name), [outcome, pages, chars, [], words])
                    entry[3].append(seconds)

    table = [["file", "group", "pdfium", "pypdf", "pdfium chars", "pypdf chars", "words agree",
              "pdfium ms", "pypdf ms"]]
    readable = {reader: 0 for reader in READERS}
    either = 0  # what the product reads: PDFium first, pypdf when PDFium fails (documents.parsing.PDF_READERS)
    pages_total = {reader: [0, [0.0] * args.rounds] for reader in READERS}
    for group, name, _ in files:
        row = [name, group]
        for reader in READERS:
            row.append(results[(name, reader)][0])
        a, b = results[(name, "pdfium")], results[(name, "pypdf")]
        row += [f"{a[2]:,}", f"{b[2]:,}"]
        both = a[0] == b[0] == "text"
        row.append(f"{overlap(b[4], a[4]):.3f} / {overlap(a[4], b[4]):.3f}" if both else "")
        row += [f"{statistics.median(a[3]) * 1000:.1f}", f"{statistics.median(b[3]) * 1000:.1f}"]
        table.append(row)
        for reader, entry in (("pdfium", a), ("pypdf", b)):
            readable[reader] += entry[0] == "text"
        either += "text" in (a[0], b[0])
        if both and group in ("generated", "shared"):
            for reader, entry in (("pdfium", a), ("pypdf", b)):
                pages_total[reader][0] += entry[1]
                for i, seconds in enumerate(entry[3]):
                    pages_total[reader][1][i] += seconds
    speed = {reader: pages / statistics.median(times) for reader, (pages, times) in pages_total.items()}
    table.append(["**readable files**", "", str(readable["pdfium"]), str(readable["pypdf"]), "", "", "", "", ""])
    table.append(["**readable by either** (PDFium, then pypdf)", "", str(either), "", "", "", "", "", ""])
    table.append(["**pages/s** (files both read)", "", f"{speed['pdfium']:.0f}", f"{speed['pypdf']:.0f}",
                  "", "", "", "", ""])
    for row in table:
        print(" | ".join(str(cell) for cell in row))
    print(f"pdfium_pages_per_s={speed['pdfium']:.0f} pypdf_pages_per_s={speed['pypdf']:.0f} "
          f"pdfium_readable={readable['pdfium']} pypdf_readable={readable['pypdf']} either={either} files={len(files)}")
    if args.no_record or args.quick:
        return
    settings = (f"{len(files)} PDFs, {args.rounds} rounds (order alternating), in one process; pypdfium2 "
                f"{version('pypdfium2')}, pypdf {version('pypdf')} with cryptography {version('cryptography')}; "
                "the product's reader functions (documents.parsing.read_pdf_pdfium / read_pdf_pypdf), median ms.")
    notes = ("Outcome: text / no text / EncryptedDocument (password) / CorruptDocument (damaged). Words agree: "
             "the share of pypdf's distinct words PDFium also found / of PDFium's that pypdf found. "
             "Pages/s: pages of the generated and shared files both read, over the median round's seconds.")
    header, *rows = table
    lines = [
        f"\n## PDF text extraction: PDFium (pypdfium2) vs. pypdf (bench/pdf_parsers.py) — "
        f"{datetime.date.today().isoformat()}\n",
        f"Machine: {_common.machine()}. Python {sys.version.split()[0]}.  ",
        f"Settings: {settings}\n",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
        "",
        notes,
    ]
    with _common.BENCHMARKS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
