"""Vocabularies: the registry (versions, ETags, the text-embedding cache) over its stores
(SQLite, Redis), label validation, lint, and the background vocabulary of "none of these"."""
