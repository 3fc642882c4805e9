"""Turn help-content files (Markdown, plain text, HTML, PDF) into help articles for the knowledge base.

Each file becomes one `Article` whose text is Markdown; nothing is stored here, so a bad file in a
folder is reported before any of the folder is imported.
"""

import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import html2text
import html5lib
from bs4 import BeautifulSoup, UnicodeDammit
from markdown_it import MarkdownIt
from markdown_it.token import Token

from bot.text import split_sentences

logger = logging.getLogger(__name__)

MARKDOWN_SUFFIXES = {".md", ".markdown"}
TEXT_SUFFIXES = {".txt", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
# A help article is a few pages; a file far larger is a manual or a data dump that belongs split up.
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_TITLE_CHARS = 200
# html5lib's parse errors (WHATWG codes) that mean the file was cut off or a tag never ends, so the
# text after it is lost or garbled; browsers recover from the others (missing doctype, stray end tags).
_FATAL_HTML_ERRORS = re.compile(r"^eof-in-|^expected-named-closing-tag-but-got-eof$")
# Parts of a web page that are not its content.
_NOT_CONTENT = ["script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "button"]
_H1 = re.compile(r"\A\s*#[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Article:
    """One help article as the index reads it: plain Markdown text."""

    slug: str  # stable id, used in traces and the console
    title: str
    text: str  # the body in Markdown; headings split it into sections
    version: int = 1


# --- Markdown text ---------------------------------------------------------------------------------

_MARKDOWN = MarkdownIt("commonmark").enable("table")


def _inline_text(token: Token) -> str:
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return " ".join("".join(parts).split())


@dataclass(frozen=True)
class Block:
    """One block of a Markdown text as its reader sees it, with its place in the article's layout."""

    kind: str  # paragraph, lead_in (the sentence that introduces the list after it), step, bullet, row, code
    text: str  # plain text, whole sentences
    heading: str = ""  # the section heading above it
    group: int | None = None  # the list or table a lead-in, item or row belongs to, counted through the text
    position: int = 0  # a step's number as the article gives it; a bullet's or row's place in its list or table


# The paragraph right before a list introduces it ("You can book online. To book a repair:"); of a longer one, only
# its last sentence does, and the rest is a paragraph of its own.
LEAD_IN_SENTENCES = 3


def _closed(text: str) -> str:
    # A list item or table row often has no full stop; give it one so it stays its own sentence.
    return text if text[-1] in ".!?:;" else text + "."


def article_blocks(text: str) -> list[Block]:
    """The paragraphs, lead-ins, list items, table rows and code blocks of a Markdown text, in order.

    A top-level list item is one block, nested lists and all; the paragraph right before a list or table, in the same
    section, is that list's lead-in (its last sentence, past LEAD_IN_SENTENCES). A table row reads
    "header: cell; header: cell."."""
    blocks: list[Block] = []
    heading = ""
    in_heading = depth = 0
    group = -1
    kind = ""  # of the open top-level list: step or bullet
    item: list[str] = []  # the texts of the open top-level item
    number = 0  # the open item's number
    header: list[str] = []
    row: list[str] = []
    in_header = in_cell = False

    def open_group(item_kind: str) -> None:
        nonlocal group, kind
        group += 1
        kind = item_kind
        last = blocks[-1] if blocks else None
        if last is not None and last.kind == "paragraph" and last.heading == heading:
            sentences = split_sentences(last.text)
            split = len(sentences) - 1 if len(sentences) > LEAD_IN_SENTENCES else 0
            before, lead = sentences[:split], sentences[split:]
            blocks[-1:] = [Block("paragraph", " ".join(before), heading)] if before else []
            blocks.append(Block("lead_in", " ".join(lead), heading, group))

    for token in _MARKDOWN.parse(text):
        if token.type == "heading_open":
            in_heading += 1
        elif token.type == "heading_close":
            in_heading -= 1
        elif token.type in ("ordered_list_open", "bullet_list_open"):
            if depth == 0:
                open_group("step" if token.type == "ordered_list_open" else "bullet")
                number = 0
            depth += 1
        elif token.type in ("ordered_list_close", "bullet_list_close"):
            depth -= 1
        elif token.type == "list_item_open" and depth == 1:
            item = []
            number = int(token.info) if kind == "step" and token.info.isdigit() else number + 1
        elif token.type == "list_item_close" and depth == 1 and item:
            blocks.append(Block(kind, " ".join(item), heading, group, number))
        elif token.type == "table_open" and depth == 0:
            open_group("row")
            header, number = [], 0
        elif token.type == "thead_open":
            in_header = True
        elif token.type == "thead_close":
            in_header = in_cell = False
        elif token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            in_cell = depth == 0
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "tr_close" and not in_header and any(row):
            names = header + [""] * len(row)  # markdown-it gives every row the header's cells; just in case
            cells = [f"{name}: {cell}" if name else cell for name, cell in zip(names, row, strict=False) if cell]
            number += 1
            blocks.append(Block("row", _closed("; ".join(cells)), heading, group, number))
        elif token.type == "inline":
            content = _inline_text(token)
            if in_cell:  # empty cells count too: they keep the columns in line with the header
                (header if in_header else row).append(content)
            elif not content:
                continue
            elif in_heading:
                heading = content
            elif depth:
                item.append(_closed(content))
            else:
                blocks.append(Block("paragraph", content, heading))
        elif token.type in ("fence", "code_block") and token.content.strip():
            code = " ".join(token.content.split())
            if depth:
                item.append(code)
            else:
                blocks.append(Block("code", code, heading))
    return blocks


def markdown_blocks(text: str) -> list[tuple[str, str]]:
    """(section heading, plain text) for each paragraph, lead-in, list item, table row and code block of a Markdown
    text (`article_blocks` without the layout)."""
    return [(block.heading, block.text) for block in article_blocks(text)]


# --- Reading files ---------------------------------------------------------------------------------


class ArticleError(Exception):
    """A file cannot become a help article; the message names the file and says why."""


def slugify(name: str) -> str:
    """A stable article id from a file name: "Returns & Refunds.md" -> "returns-refunds"."""
    slug = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-_")
    return slug[:80].rstrip("-_")


def _title_from_name(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize()


def split_title(markdown: str) -> tuple[str | None, str]:
    """The text of a leading `# Title` line, and the rest of the Markdown."""
    match = _H1.match(markdown)
    if match is None:
        return None, markdown.strip()
    return match.group(1).strip(), markdown[match.end() :].strip()


def plain_text(markdown: str) -> str:
    """The Markdown's paragraphs as plain sentences, markup removed."""
    return " ".join(text for _, text in markdown_blocks(markdown))


def article_from_markdown(slug: str, markdown: str, *, fallback_title: str, where: str = "") -> Article:
    """An article from Markdown text: its `# Title` line (or `fallback_title`) and the body."""
    where = where or slug
    title, body = split_title(markdown)
    if not plain_text(body):
        raise ArticleError(f"{where}: has no text to import")
    title = " ".join((title or fallback_title).split())
    if len(title) > MAX_TITLE_CHARS:
        raise ArticleError(f"{where}: the title is {len(title)} characters; at most {MAX_TITLE_CHARS}")
    if not slug:
        raise ArticleError(f"{where}: the name gives no article id; use letters or digits in the file name")
    return Article(slug=slug, title=title, text=body)


def read_article(path: Path) -> Article:
    """Read one file into an article whose slug is the file name's; raises ArticleError when it can't."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ArticleError(f"{path}: unsupported file type {suffix or '(none)'}; use {', '.join(sorted(SUFFIXES))}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ArticleError(
                f"{path}: the file is {size / 1e6:.1f} MB; a help article may be at most {MAX_FILE_BYTES / 1e6:.0f} MB"
                " (split it into several articles)"
            )
        data = path.read_bytes()
    except OSError as err:
        raise ArticleError(f"{path}: cannot read: {err.strerror or err}") from err
    if not data.strip():
        raise ArticleError(f"{path}: the file is empty")
    if suffix in PDF_SUFFIXES:
        markdown, title = _pdf_text(path, data), None
    else:
        if b"\x00" in data[:65536]:
            raise ArticleError(f"{path}: this is a binary file, not {suffix[1:].upper()} text")
        if suffix in HTML_SUFFIXES:
            markdown, title = _html_markdown(path, data)
        else:
            try:
                markdown, title = data.decode("utf-8-sig"), None
            except UnicodeDecodeError as err:
                raise ArticleError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    if title is not None:
        markdown = f"# {title}\n\n{markdown}"
    return article_from_markdown(slugify(path.stem), markdown, fallback_title=_title_from_name(path), where=str(path))


def article_files(paths: Iterable[Path]) -> list[Path]:
    """The files to import: each file named, and every supported file under each folder named, sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise ArticleError(f"{path}: no help files in this folder ({', '.join(sorted(SUFFIXES))})")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise ArticleError(f"{path}: no such file or folder")
    return files


def read_articles(paths: Iterable[Path]) -> list[tuple[Path, Article]]:
    """Every article under `paths`, with its file; all files are read and checked before any is
    returned, and two files that would become the same article are refused."""
    articles: dict[str, tuple[Path, Article]] = {}
    for path in article_files(paths):
        article = read_article(path)
        if article.slug in articles:
            raise ArticleError(f"{path}: becomes article {article.slug!r}, as {articles[article.slug][0]} does")
        articles[article.slug] = (path, article)
    return list(articles.values())


def _html_markdown(path: Path, data: bytes) -> tuple[str, str | None]:
    decoded = UnicodeDammit(data, is_html=True).unicode_markup
    if decoded is None:
        raise ArticleError(f"{path}: cannot tell the text encoding of this HTML")
    parser = html5lib.HTMLParser(tree=html5lib.getTreeBuilder("etree"))
    parser.parse(decoded)
    for (line, column), code, _ in parser.errors:
        if _FATAL_HTML_ERRORS.match(code):
            raise ArticleError(
                f"{path}: broken HTML at line {line}, column {column} ({code.replace('-', ' ')}): "
                "the file looks cut off or a tag is never closed"
            )
    soup = BeautifulSoup(decoded, "html5lib")
    for tag in soup.find_all(_NOT_CONTENT):
        tag.decompose()
    heading = soup.find("h1")
    title = heading.get_text(" ", strip=True) if heading else None
    if heading is not None:
        heading.decompose()
    if not title and soup.title is not None:
        title = soup.title.get_text(" ", strip=True) or None
    content = soup.find("main") or soup.find("article") or soup.body or soup
    converter = html2text.HTML2Text(bodywidth=0)
    converter.ignore_images = True
    converter.ignore_links = True
    converter.ignore_emphasis = True
    return converter.handle(str(content)), title


def _pdf_text(path: Path, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ArticleError(f"{path}: the PDF is encrypted; export it without a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as err:
        raise ArticleError(f"{path}: not a readable PDF: {err}") from err
    # PDF text comes line by line: blank lines end paragraphs, other line breaks are only layout.
    paragraphs = []
    for page in pages:
        for block in re.split(r"\n\s*\n", page):
            text = " ".join(block.split())
            if text:
                paragraphs.append(text)
    return "\n\n".join(paragraphs)
