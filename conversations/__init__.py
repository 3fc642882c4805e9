"""The system of record: conversations and messages, stored with SQLModel."""
