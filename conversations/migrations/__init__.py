"""Alembic migrations of the conversation store; `conversations.db.upgrade_db` applies them."""
