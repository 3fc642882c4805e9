"""The console's Knowledge page: admins list, add, edit, retire and restore help articles, and make help snippets
of the questions the bot could not answer and a teammate then did (or dismiss them).

A saved change is audited, kept as a version, and indexed at once here; other app replicas pick it
up at their next poll of the knowledge base's revision (serving/knowledge.py).
"""

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from bot.articles import MAX_TITLE_CHARS, plain_text, slugify
from conversations import crud
from conversations import knowledge as kb
from conversations.pii import mask_pii
from serving.auth import SignedIn
from serving.console.pages import back, render
from serving.deps import CurrentAdmin, ServicesDep, SessionDep
from serving.errors import REPORTED, ApiError, as_api_error

router = APIRouter(prefix="/console/knowledge", include_in_schema=False)

# An article typed into the console; longer help content is imported from files (`supportbot kb import`).
MAX_TEXT_CHARS = 100_000
# Answered gaps listed at once: an admin works through them from the newest.
GAPS_SHOWN = 50


def _draft(slug: str, title: str, text: str) -> kb.ArticleDraft:
    """A checked article: a usable id, a title, and Markdown with at least one sentence in it."""
    slug, title, text = slugify(slug), " ".join(title.split()), text.replace("\r\n", "\n").strip()
    if not slug:
        raise ApiError(422, "bad_article", "The id needs letters or digits.")
    if not title:
        raise ApiError(422, "bad_article", "The article needs a title.")
    if not plain_text(text):
        raise ApiError(422, "bad_article", "The article has no text: write at least one sentence.")
    return kb.ArticleDraft(slug=slug, title=title, text=text)


def _refuse_taken(session: Session, slug: str) -> None:
    """A new article may not take an existing one's id (a retired one's included)."""
    try:
        kb.get_article(session=session, slug=slug)
    except kb.ArticleNotFound:
        return
    raise ApiError(409, "article_exists", f"An article {slug!r} exists already: edit it instead.")


def _audit(session: Session, signed: SignedIn, action: str, slug: str, version: int, **details: object) -> None:
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action=action, target=f"article:{slug}",
        details={"version": version, **details},
    )  # fmt: skip


def _reindex(services: ServicesDep) -> None:
    # Customers get the change from their next message on, without waiting for the poll.
    if services.knowledge is not None:
        services.knowledge.refresh()


def snippet_slug(question_id: int) -> str:
    """The id of the help snippet made from the answered gap of this customer question."""
    return f"snippet-{question_id}"


def snippet_draft(gap: crud.AnsweredGap) -> kb.ArticleDraft:
    """What the "Add as snippet" form starts from: the customer's question as the title and the teammate's answer as
    the text, both with personal data masked (the snippet is shown to every customer)."""
    title = " ".join(mask_pii(gap.question).split())
    title = title[:1].upper() + title[1:]
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return kb.ArticleDraft(slug=snippet_slug(gap.question_id), title=title, text=mask_pii(gap.answer).strip())


def knowledge_page(
    request: Request, signed: SignedIn, session: Session, error: str | None = None, status_code: int = 200,
    draft: kb.ArticleDraft | None = None, snippet: kb.ArticleDraft | None = None,
) -> HTMLResponse:  # fmt: skip
    """The page; `snippet` keeps what an admin typed into a gap's form that was refused."""
    articles = kb.list_articles(session=session)
    gaps = [
        (gap, snippet if snippet is not None and snippet.slug == snippet_slug(gap.question_id) else snippet_draft(gap))
        for gap in crud.pending_gaps(session=session, limit=GAPS_SHOWN)
    ]
    return render(
        request, "knowledge.html", signed, status_code, section="knowledge", articles=articles, error=error,
        draft=draft, gaps=gaps, max_title=MAX_TITLE_CHARS, max_text=MAX_TEXT_CHARS,
    )  # fmt: skip


def article_page(
    request: Request, signed: SignedIn, session: Session, slug: str, error: str | None = None,
    status_code: int = 200, draft: kb.ArticleDraft | None = None,
) -> HTMLResponse:  # fmt: skip
    try:
        article = kb.get_article(session=session, slug=slug)
    except kb.ArticleNotFound as missing:
        raise ApiError(404, "article_not_found", f"There is no help article {slug!r}.") from missing
    history = kb.article_history(session=session, slug=slug)
    return render(
        request, "knowledge_article.html", signed, status_code, section="knowledge", article=article,
        history=history, error=error, draft=draft, max_title=MAX_TITLE_CHARS, max_text=MAX_TEXT_CHARS,
    )  # fmt: skip


@router.get("")
def knowledge(signed: CurrentAdmin, request: Request, session: SessionDep) -> HTMLResponse:
    return knowledge_page(request, signed, session)


@router.post("")
def create_article(
    signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep,
    slug: Annotated[str, Form(max_length=80)], title: Annotated[str, Form(max_length=MAX_TITLE_CHARS)],
    text: Annotated[str, Form(max_length=MAX_TEXT_CHARS)],
) -> Response:  # fmt: skip
    try:
        draft = _draft(slug, title, text)
        _refuse_taken(session, draft.slug)
    except ApiError as error:
        fallback = kb.ArticleDraft(slug, title, text)
        return knowledge_page(request, signed, session, error.message, error.status, draft=fallback)
    saved = kb.save_article(
        session=session, draft=draft, changed_by=signed.staff.email, source="console", staff_id=signed.staff.id
    )
    _audit(session, signed, "kb.create", draft.slug, saved.article.version)
    _reindex(services)
    return back(f"/console/knowledge/{draft.slug}", "article_created")


@router.post("/gaps/{question_id}")
def add_snippet(
    question_id: int, signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep,
    title: Annotated[str, Form(max_length=MAX_TITLE_CHARS)], text: Annotated[str, Form(max_length=MAX_TEXT_CHARS)],
) -> Response:  # fmt: skip
    """Approve an answered gap: the (edited) teammate's answer becomes a help article the bot answers from."""
    slug = snippet_slug(question_id)
    try:
        gap = crud.get_answered_gap(session=session, question_id=question_id)
        draft = _draft(slug, title, text)
        _refuse_taken(session, draft.slug)
    except REPORTED as failure:
        error = as_api_error(failure)
        typed = kb.ArticleDraft(slug, title, text)
        return knowledge_page(request, signed, session, error.message, error.status, snippet=typed)
    saved = kb.save_article(
        session=session, draft=draft, changed_by=signed.staff.email,
        source=f"teammate answer in conversation {gap.conversation_id}", staff_id=signed.staff.id,
    )  # fmt: skip
    crud.decide_gap(session=session, gap=gap, article_slug=slug, staff_id=signed.staff.id)
    _audit(session, signed, "kb.create", slug, saved.article.version, conversation=gap.conversation_id)
    _reindex(services)
    return back(f"/console/knowledge/{slug}", "snippet_created")


@router.post("/gaps/{question_id}/dismiss")
def dismiss_gap(question_id: int, signed: CurrentAdmin, request: Request, session: SessionDep) -> Response:
    """Not a snippet: the answered gap leaves the list; the conversation stays as it is."""
    try:
        gap = crud.get_answered_gap(session=session, question_id=question_id)
        crud.decide_gap(session=session, gap=gap, article_slug=None, staff_id=signed.staff.id)
    except REPORTED as failure:
        error = as_api_error(failure)
        return knowledge_page(request, signed, session, error.message, error.status)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="kb.gap_dismissed",
        target=f"conversation:{gap.conversation_id}", details={"message": question_id},
    )  # fmt: skip
    return back("/console/knowledge", "gap_dismissed", "#gaps")


@router.get("/{slug}")
def article(slug: str, signed: CurrentAdmin, request: Request, session: SessionDep) -> HTMLResponse:
    return article_page(request, signed, session, slug)


@router.post("/{slug}")
def edit_article(
    slug: str, signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep,
    title: Annotated[str, Form(max_length=MAX_TITLE_CHARS)], text: Annotated[str, Form(max_length=MAX_TEXT_CHARS)],
    expected_version: Annotated[int, Form(ge=1)],
) -> Response:  # fmt: skip
    try:
        kb.get_article(session=session, slug=slug)
        draft = _draft(slug, title, text)
        saved = kb.save_article(
            session=session, draft=draft, changed_by=signed.staff.email, source="console", staff_id=signed.staff.id,
            expected_version=expected_version,
        )  # fmt: skip
    except kb.ArticleNotFound as missing:
        raise ApiError(404, "article_not_found", f"There is no help article {slug!r}.") from missing
    except kb.StaleArticle as stale:
        message = f"Someone saved this article (now version {stale.version}) while you edited it. Your text is below."
        return article_page(request, signed, session, slug, message, 409, draft=kb.ArticleDraft(slug, title, text))
    except ApiError as error:
        return article_page(
            request, signed, session, slug, error.message, error.status, draft=kb.ArticleDraft(slug, title, text)
        )
    if saved.change is None:
        return back(f"/console/knowledge/{slug}", "article_unchanged")
    _audit(session, signed, f"kb.{saved.change}", slug, saved.article.version)
    _reindex(services)
    return back(f"/console/knowledge/{slug}", "article_saved")


@router.post("/{slug}/retire")
def retire_article(slug: str, signed: CurrentAdmin, session: SessionDep, services: ServicesDep) -> Response:
    try:
        article = kb.retire_article(session=session, slug=slug, changed_by=signed.staff.email, staff_id=signed.staff.id)
    except kb.ArticleNotFound as missing:
        raise ApiError(404, "article_not_found", f"There is no help article {slug!r}.") from missing
    _audit(session, signed, "kb.retire", slug, article.version)
    _reindex(services)
    return back("/console/knowledge", "article_retired")


@router.post("/{slug}/restore")
def restore_article(slug: str, signed: CurrentAdmin, session: SessionDep, services: ServicesDep) -> Response:
    try:
        current = kb.get_article(session=session, slug=slug)
    except kb.ArticleNotFound as missing:
        raise ApiError(404, "article_not_found", f"There is no help article {slug!r}.") from missing
    saved = kb.save_article(
        session=session, draft=kb.ArticleDraft(current.slug, current.title, current.text),
        changed_by=signed.staff.email, source="console", staff_id=signed.staff.id,
    )  # fmt: skip
    if saved.change is not None:
        _audit(session, signed, "kb.restore", slug, saved.article.version)
        _reindex(services)
    return back("/console/knowledge", "article_restored")
