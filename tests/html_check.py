"""Reading and checking an HTML page with Python's own parser, for the status page's tests.

`problems` lists what makes markup invalid or links broken: an element closed that was not open or
left open, an element where HTML does not allow it (a block inside a `<p>`, a row outside a table),
a duplicate `id`, a `#fragment` link to no `id`, and any link that is not one of the page's own
(`?query`, `#id`, `/v1/status`) or the dashboard's. `tidy` (Debian's HTML checker) is run as well
where it is installed. `rows` reads a section's table as lists of cell texts.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

VOID = {"meta", "link", "br", "hr", "img", "input", "wbr", "col", "source", "area", "base"}
# Elements that a `<p>` may not contain (it would close the paragraph implicitly).
BLOCK = {"div", "p", "table", "ul", "ol", "pre", "section", "h1", "h2", "h3", "form", "header", "footer", "nav"}
PARENTS = {"tr": {"thead", "tbody", "table"}, "td": {"tr"}, "th": {"tr"}, "li": {"ul", "ol"},
           "thead": {"table"}, "tbody": {"table"}}


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []
        self.section: str | None = None
        self.tables: dict[str, list[list[str]]] = {}
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in PARENTS and (not self.stack or self.stack[-1] not in PARENTS[tag]):
            self.problems.append(f"<{tag}> inside <{self.stack[-1] if self.stack else 'nothing'}>")
        if tag in BLOCK and "p" in self.stack:
            self.problems.append(f"<{tag}> inside <p>")
        if values.get("id"):
            self.ids.append(str(values["id"]))
        if tag == "section":
            self.section = values.get("id")
        if tag == "a":
            self.links.append(values.get("href") or "")
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            if tag in self.stack:
                del self.stack[self.stack.index(tag):]
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.tables.setdefault(self.section or "", []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def read(page: str) -> _Reader:
    reader = _Reader()
    reader.feed(page)
    reader.close()
    return reader


def problems(page: str, *, dashboard: str | None = None) -> list[str]:
    """Everything wrong with the markup and links of `page` (empty when it is valid)."""
    reader = read(page)
    found = list(reader.problems)
    if reader.stack:
        found.append(f"left open: {reader.stack}")
    if not page.lstrip().lower().startswith("<!doctype html>"):
        found.append("no <!DOCTYPE html>")
    found += [f"duplicate id {i}" for i in sorted({i for i in reader.ids if reader.ids.count(i) > 1})]
    for link in reader.links:
        if link.startswith("#"):
            if link[1:] not in reader.ids:
                found.append(f"link to a missing id: {link}")
        elif not (link.startswith("?") or link == "/v1/status" or (dashboard and link.startswith(dashboard))):
            found.append(f"link outside the page: {link!r}")
    if shutil.which("tidy"):
        # -e: errors and warnings only; tidy exits 0 (clean), 1 (warnings) or 2 (errors).
        proc = subprocess.run(["tidy", "-q", "-e", "--drop-empty-elements", "no"], input=page,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            found.append(f"tidy: {proc.stderr.strip()}")
    return found


def rows(page: str, section: str) -> list[list[str]]:
    """The rows of the tables in `<section id=SECTION>`, each a list of cell texts (header rows too)."""
    return read(page).tables.get(section, [])


def text(page: str) -> str:
    """The page's text, whitespace collapsed."""
    return " ".join("".join(read(page).text).split())
