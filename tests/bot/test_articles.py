"""Help files become articles: Markdown, plain text, HTML and PDF read as a person would read them,
and bad files (empty, binary, huge, broken HTML) refused with a message that names the file."""

import os
from pathlib import Path

import pytest

from bot.articles import (
    ArticleError,
    article_blocks,
    markdown_blocks,
    read_article,
    read_articles,
    split_sentences,
    split_title,
)
from bot.knowledge import Article, split_passages


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def tiny_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with these lines of text, as a word processor's export would hold them."""
    text = " ".join(f"({line}) Tj 0 -16 Td" for line in lines)
    stream = f"BT /F1 12 Tf 72 720 Td {text} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_markdown_article_takes_its_title_and_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Gift Wrapping.md",
        "# Gift wrapping\n\nWe gift-wrap any order for **$4.50**. Choose it at checkout.\n\n"
        "## Messages\n\nA card message can be up to 200 characters.\n\n- Emoji are printed in black\n",
    )
    article = read_article(path)
    assert (article.slug, article.title) == ("gift-wrapping", "Gift wrapping")
    passages = split_passages(article)
    assert [p.text for p in passages] == [
        "We gift-wrap any order for $4.50. Choose it at checkout.",
        "A card message can be up to 200 characters. Emoji are printed in black.",
    ]
    assert [p.heading for p in passages] == ["", "Messages"]


def test_html_page_keeps_its_content_and_drops_the_site_around_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "loyalty.html",
        """<!doctype html><html><head><title>Loyalty | Lumen</title><script>track()</script></head>
        <body><nav>Home | Shop | Cart</nav><main><h1>Loyalty points</h1>
        <p>You earn <b>1 point</b> per dollar spent.</p><h2>Expiry</h2><ul><li>Points expire after 12 months</li>
        <li>Expired points cannot be restored</li></ul></main><footer>(c) 2026 Lumen</footer></body></html>""",
    )
    article = read_article(path)
    assert article.title == "Loyalty points"
    passages = split_passages(article)
    text = " ".join(p.text for p in passages)
    assert text == (
        "You earn 1 point per dollar spent. Points expire after 12 months. Expired points cannot be restored."
    )
    assert not any(word in text for word in ("Home", "track", "2026"))
    assert passages[-1].heading == "Expiry"


def test_plain_text_and_pdf_are_read(tmp_path: Path) -> None:
    text = read_article(write(tmp_path, "care_guide.txt", "Wash bedding at 40 degrees.\n\nDo not tumble dry."))
    assert (text.slug, text.title) == ("care_guide", "Care guide")
    assert [p.text for p in split_passages(text)] == ["Wash bedding at 40 degrees. Do not tumble dry."]
    pdf = read_article(write(tmp_path, "care.pdf", tiny_pdf(["Wash bedding at 40 degrees.", "Do not tumble dry."])))
    assert pdf.text == "Wash bedding at 40 degrees. Do not tumble dry."


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.md", "", "the file is empty"),
        ("blank.md", "# Only a title\n\n   \n", "has no text to import"),
        ("photo.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(256), "binary file"),
        ("latin.txt", "Caf\xe9 opening hours".encode("latin-1"), "not UTF-8 text"),
        ("cut.html", '<html><body><p>Returns within 30 days.</p><a href="/ret', "broken HTML at line 1"),
        ("script.html", "<html><body><p>Hi</p><script>var x = 1;", "broken HTML"),
        ("comment.html", "<p>Returns within 30 days.</p><!-- old text", "broken HTML"),
        ("empty.html", "<html><body><nav>Home</nav></body></html>", "has no text"),
        ("slides.pptx", b"PK\x03\x04", "unsupported file type .pptx"),
        ("broken.pdf", b"%PDF-1.4\nnot really", "not a readable PDF"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(ArticleError, match=message) as caught:
        read_article(path)
    assert str(path) in str(caught.value)


def test_a_50_mb_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "manual.md"
    with path.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    with pytest.raises(ArticleError, match=r"manual\.md: the file is 52\.4 MB; a help article may be at most 5 MB"):
        read_article(path)


def test_a_folder_with_one_bad_file_gives_no_articles(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "# A\n\nFine text.")
    write(tmp_path, "b.html", "<p>Cut off <a href='x")
    with pytest.raises(ArticleError, match=r"b\.html: broken HTML"):
        read_articles([tmp_path])
    write(tmp_path, "b.html", "<p>Whole now.</p>")
    write(tmp_path, "notes.json", "{}")  # not a help file: skipped in a folder
    assert [article.slug for _, article in read_articles([tmp_path])] == ["a", "b"]


def test_two_files_for_one_article_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "returns.md", "Text one.")
    write(tmp_path, "returns.html", "<p>Text two.</p>")
    with pytest.raises(ArticleError, match="becomes article 'returns'"):
        read_articles([tmp_path])


def test_sentences_stay_whole() -> None:
    assert split_sentences("P.O. boxes get standard shipping only. We ship to the U.S. and Canada! Ask e.g. Ana.") == [
        "P.O. boxes get standard shipping only.",
        "We ship to the U.S. and Canada!",
        "Ask e.g. Ana.",
    ]


def test_long_paragraphs_split_evenly_and_short_ones_merge() -> None:
    sentences = [f"Fact number {n} is stated here." for n in range(1, 8)]
    article = Article("facts", "Facts", " ".join(sentences) + "\n\nShort one.\n\nShort two.")
    passages = split_passages(article)
    # 7 sentences -> 4 + 3; a short paragraph joins the passage before it while that stays at 4 sentences.
    assert [p.text.count(".") for p in passages] == [4, 4, 1]
    assert passages[1].text.endswith("Fact number 7 is stated here. Short one.")


HOW_TO = """# Parcel lockers

You can send a parcel from any locker. Follow these steps:

1. Weigh the parcel
   - at home, any kitchen scale will do
2. Buy a label in the app.
3. Scan the label at the locker.

## Sizes

Lockers come in three sizes:

- Small
- Large, up to 20 kg

| Size | Price |
|------|-------|
| Small | $3 |
| Large | |

4. A list that starts at four

Questions? Write to us.
"""


def test_markdown_keeps_each_blocks_kind_list_and_lead_in() -> None:
    blocks = article_blocks(split_title(HOW_TO)[1])
    assert [(b.kind, b.text, b.heading, b.group, b.position) for b in blocks] == [
        ("lead_in", "You can send a parcel from any locker. Follow these steps:", "", 0, 0),
        # A nested list belongs to the step it sits in.
        ("step", "Weigh the parcel. at home, any kitchen scale will do.", "", 0, 1),
        ("step", "Buy a label in the app.", "", 0, 2),
        ("step", "Scan the label at the locker.", "", 0, 3),
        ("lead_in", "Lockers come in three sizes:", "Sizes", 1, 0),
        ("bullet", "Small.", "Sizes", 1, 1),
        ("bullet", "Large, up to 20 kg.", "Sizes", 1, 2),
        # A table is a list of rows, each read with its header; an empty cell says nothing.
        ("row", "Size: Small; Price: $3.", "Sizes", 2, 1),
        ("row", "Size: Large.", "Sizes", 2, 2),
        ("step", "A list that starts at four.", "Sizes", 3, 4),
        ("paragraph", "Questions? Write to us.", "Sizes", None, 0),
    ]
    # The older view, (heading, text), is the same blocks without their layout.
    assert markdown_blocks(split_title(HOW_TO)[1]) == [(b.heading, b.text) for b in blocks]


def test_only_the_last_sentence_of_a_long_paragraph_leads_into_a_list() -> None:
    text = "One fact here. Two facts here. Three facts here. Then the steps:\n\n1. First\n2. Second\n"
    assert [(b.kind, b.text) for b in article_blocks(text)] == [
        ("paragraph", "One fact here. Two facts here. Three facts here."),
        ("lead_in", "Then the steps:"),
        ("step", "First."),
        ("step", "Second."),
    ]
    # After a heading, a list has no lead-in.
    assert [b.kind for b in article_blocks("Intro text.\n\n## Steps\n\n1. First\n")] == ["paragraph", "step"]


def test_a_procedure_stays_in_one_passage_with_its_lead_in() -> None:
    steps = [f"Do thing number {n} now." for n in range(1, 10)]
    text = "Intro. To do it:\n\n" + "\n".join(f"{n}. {step}" for n, step in enumerate(steps, 1)) + "\n\nAfter that."
    passages = split_passages(Article("howto", "How to", text))
    # 9 steps and the lead-in, past MAX_SENTENCES, in one passage; what follows starts the next.
    assert [p.text for p in passages] == ["Intro. To do it: " + " ".join(steps), "After that."]
    assert [p.position for p in passages] == [0, 1]
    layout = passages[0].layout()
    assert [sentence for sentence, _ in layout] == ["Intro.", "To do it: Do thing number 1 now.", *steps[1:]]
    # "To do it:" and the first step read as one sentence, which lies in both parts.
    assert [part.kind for part in layout[1][1]] == ["lead_in", "step"]
    assert [part.position for _, parts in layout[2:] for part in parts] == list(range(2, 10))


def test_a_list_past_the_bound_splits_into_even_runs() -> None:
    text = "Our stores:\n\n" + "\n".join(f"- Store {n} is open daily." for n in range(1, 15))
    passages = split_passages(Article("stores", "Stores", text))
    assert [len(p.parts) for p in passages] == [8, 7]  # 14 bullets in runs of 7, the lead-in with the first
    assert passages[0].parts[0].kind == "lead_in" and passages[1].text.startswith("Store 8 is open daily.")
