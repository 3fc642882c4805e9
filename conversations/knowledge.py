"""Queries of the knowledge base: help articles, every saved version of them, and the KB's revision.

Keyword-only functions that take the session first, as in conversations/crud.py. Every change adds
a HelpArticleVersion row, so the history says who changed what and when.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from conversations.models import ArticleChange, HelpArticle, HelpArticleVersion, utcnow


class ArticleNotFound(Exception):
    """No help article has this slug."""


@dataclass(frozen=True)
class ArticleDraft:
    """An article's content as an import or an editor gives it."""

    slug: str
    title: str
    text: str


@dataclass(frozen=True)
class SavedArticle:
    """An article after a save, and what the save did (None: the same text was there already)."""

    article: HelpArticle
    change: ArticleChange | None


def knowledge_revision(*, session: Session) -> int:
    """A number that grows with every change to any article (0 for an empty knowledge base); cheap
    enough to poll every few seconds."""
    return int(session.exec(select(func.max(HelpArticleVersion.id))).one() or 0)


def get_article(*, session: Session, slug: str) -> HelpArticle:
    article = session.exec(select(HelpArticle).where(HelpArticle.slug == slug)).first()
    if article is None:
        raise ArticleNotFound(slug)
    return article


def list_articles(*, session: Session, include_retired: bool = True) -> Sequence[HelpArticle]:
    """Articles by slug; retired ones only when asked."""
    statement = select(HelpArticle).order_by(col(HelpArticle.slug))
    if not include_retired:
        statement = statement.where(col(HelpArticle.retired).is_(False))
    return session.exec(statement).all()


def article_history(*, session: Session, slug: str) -> Sequence[HelpArticleVersion]:
    """Every saved version of an article, newest first."""
    article = get_article(session=session, slug=slug)
    statement = (
        select(HelpArticleVersion)
        .where(HelpArticleVersion.article_id == article.id)
        .order_by(col(HelpArticleVersion.id).desc())
    )
    return session.exec(statement).all()


def _record(
    session: Session, article: HelpArticle, change: ArticleChange, *, changed_by: str, source: str, staff_id: int | None
) -> None:
    article.updated_at = utcnow()
    article.updated_by = changed_by
    session.add(article)
    session.flush()  # gives a new article its id
    assert article.id is not None
    session.add(
        HelpArticleVersion(
            article_id=article.id,
            version=article.version,
            change=change,
            title=article.title,
            text=article.text,
            retired=article.retired,
            source=source[:300],
            changed_by=changed_by[:254],
            staff_id=staff_id,
        )
    )


def _save(session: Session, draft: ArticleDraft, *, changed_by: str, source: str, staff_id: int | None) -> SavedArticle:
    article = session.exec(select(HelpArticle).where(HelpArticle.slug == draft.slug)).first()
    if article is None:
        article = HelpArticle(slug=draft.slug, title=draft.title, text=draft.text, updated_by=changed_by)
        _record(session, article, ArticleChange.created, changed_by=changed_by, source=source, staff_id=staff_id)
        return SavedArticle(article, ArticleChange.created)
    if article.title == draft.title and article.text == draft.text and not article.retired:
        return SavedArticle(article, None)
    change = ArticleChange.restored if article.retired else ArticleChange.edited
    article.title, article.text, article.retired = draft.title, draft.text, False
    article.version += 1
    _record(session, article, change, changed_by=changed_by, source=source, staff_id=staff_id)
    return SavedArticle(article, change)


def save_articles(
    *,
    session: Session,
    drafts: Sequence[ArticleDraft],
    changed_by: str,
    source: str | Sequence[str] = "",
    staff_id: int | None = None,
) -> list[SavedArticle]:
    """Create or update these articles in one transaction: all are saved or none. An article saved
    with the text it already has gets no new version; a retired one saved again is restored."""
    sources = [source] * len(drafts) if isinstance(source, str) else list(source)
    try:
        saved = [
            _save(session, draft, changed_by=changed_by, source=where, staff_id=staff_id)
            for draft, where in zip(drafts, sources, strict=True)
        ]
        session.commit()
    except Exception:
        session.rollback()
        raise
    for result in saved:
        session.refresh(result.article)
    return saved


def save_article(
    *,
    session: Session,
    draft: ArticleDraft,
    changed_by: str,
    source: str = "",
    staff_id: int | None = None,
    expected_version: int | None = None,
) -> SavedArticle:
    """Create or update one article. With `expected_version`, an edit based on an older version
    than the stored one raises StaleArticle instead of overwriting someone else's change."""
    if expected_version is not None:
        current = session.exec(select(HelpArticle).where(HelpArticle.slug == draft.slug)).first()
        if current is not None and current.version != expected_version:
            raise StaleArticle(draft.slug, current.version)
    return save_articles(session=session, drafts=[draft], changed_by=changed_by, source=source, staff_id=staff_id)[0]


class StaleArticle(Exception):
    """The article changed since the editor loaded it."""

    def __init__(self, slug: str, version: int) -> None:
        super().__init__(f"article {slug!r} is at version {version} now; reload it and edit again")
        self.slug, self.version = slug, version


def retire_article(*, session: Session, slug: str, changed_by: str, staff_id: int | None = None) -> HelpArticle:
    """Stop searching and quoting an article; its history stays. Retiring a retired article does nothing."""
    article = get_article(session=session, slug=slug)
    if article.retired:
        return article
    article.retired = True
    article.version += 1
    _record(session, article, ArticleChange.retired, changed_by=changed_by, source="", staff_id=staff_id)
    session.commit()
    session.refresh(article)
    return article


def seed_articles(*, session: Session, drafts: Sequence[ArticleDraft], source: str) -> int:
    """Import the domain pack's articles into an empty knowledge base (first start); returns how many.
    A knowledge base that has ever had an article is left alone, so retired or edited pack articles
    do not come back on restart."""
    if knowledge_revision(session=session) or not drafts:
        return 0
    try:
        return len(save_articles(session=session, drafts=drafts, changed_by="domain pack", source=source))
    except IntegrityError:
        return 0  # another replica starting at the same moment imported them first
