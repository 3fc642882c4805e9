"""One file per schema revision, generated with `conversations.db.new_revision` (see ../README.md)."""
