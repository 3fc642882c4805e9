"""Help articles in the store: every change is a kept version with who and when, retiring hides an
article without losing it, a batch is saved whole or not at all, and the revision moves on each change."""

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from conversations import knowledge as kb
from conversations.models import ArticleChange

RETURNS = kb.ArticleDraft("returns", "Returns", "You can return most items within 30 days of delivery.")


def test_each_change_is_a_version_with_who_and_when(session: Session) -> None:
    assert kb.knowledge_revision(session=session) == 0
    [created] = kb.save_articles(session=session, drafts=[RETURNS], changed_by="ana@example.com", source="returns.md")
    assert created.change == ArticleChange.created and created.article.version == 1
    first = kb.knowledge_revision(session=session)

    same = kb.save_article(session=session, draft=RETURNS, changed_by="bo@example.com")
    assert same.change is None and same.article.version == 1  # unchanged text: no new version
    assert kb.knowledge_revision(session=session) == first

    edited = kb.ArticleDraft("returns", "Returns", "You can return most items within 60 days of delivery.")
    result = kb.save_article(session=session, draft=edited, changed_by="bo@example.com", source="console")
    assert result.change == ArticleChange.edited and result.article.version == 2
    assert result.article.updated_by == "bo@example.com"
    assert kb.knowledge_revision(session=session) > first

    history = kb.article_history(session=session, slug="returns")
    assert [(v.version, v.change, v.changed_by, v.source) for v in history] == [
        (2, ArticleChange.edited, "bo@example.com", "console"),
        (1, ArticleChange.created, "ana@example.com", "returns.md"),
    ]
    assert "30 days" in history[1].text and "60 days" in history[0].text
    assert history[0].at >= history[1].at


def test_retired_articles_leave_the_live_list_and_come_back_on_import(session: Session) -> None:
    kb.save_article(session=session, draft=RETURNS, changed_by="ana@example.com")
    retired = kb.retire_article(session=session, slug="returns", changed_by="ana@example.com")
    assert retired.retired and retired.version == 2
    assert kb.list_articles(session=session, include_retired=False) == []
    assert [a.slug for a in kb.list_articles(session=session)] == ["returns"]
    revision = kb.knowledge_revision(session=session)
    kb.retire_article(session=session, slug="returns", changed_by="ana@example.com")  # again: nothing happens
    assert kb.knowledge_revision(session=session) == revision

    restored = kb.save_article(session=session, draft=RETURNS, changed_by="bo@example.com")
    assert restored.change == ArticleChange.restored and restored.article.version == 3
    assert [a.slug for a in kb.list_articles(session=session, include_retired=False)] == ["returns"]
    with pytest.raises(kb.ArticleNotFound):
        kb.retire_article(session=session, slug="loyalty", changed_by="ana@example.com")


def test_a_batch_is_saved_whole_or_not_at_all(session: Session) -> None:
    broken = kb.ArticleDraft("loyalty", "Loyalty", None)  # type: ignore[arg-type]  # a NULL the store refuses
    with pytest.raises(IntegrityError):
        kb.save_articles(session=session, drafts=[RETURNS, broken], changed_by="ana@example.com")
    assert kb.list_articles(session=session) == [] and kb.knowledge_revision(session=session) == 0


def test_an_edit_from_an_older_version_is_refused(session: Session) -> None:
    kb.save_article(session=session, draft=RETURNS, changed_by="ana@example.com")
    kb.save_article(session=session, draft=RETURNS, changed_by="bo@example.com", expected_version=1)
    newer = kb.ArticleDraft("returns", "Returns", "Returns are accepted within 45 days.")
    kb.save_article(session=session, draft=newer, changed_by="bo@example.com", expected_version=1)
    with pytest.raises(kb.StaleArticle, match="version 2 now"):
        kb.save_article(session=session, draft=RETURNS, changed_by="ana@example.com", expected_version=1)
    assert "45 days" in kb.get_article(session=session, slug="returns").text


def test_the_pack_is_imported_only_into_an_empty_knowledge_base(session: Session) -> None:
    assert kb.seed_articles(session=session, drafts=[RETURNS], source="domain pack") == 1
    kb.retire_article(session=session, slug="returns", changed_by="ana@example.com")
    other = kb.ArticleDraft("shipping", "Shipping", "Standard shipping takes 3 to 5 business days.")
    assert kb.seed_articles(session=session, drafts=[RETURNS, other], source="domain pack") == 0
    assert [a.slug for a in kb.list_articles(session=session, include_retired=False)] == []
