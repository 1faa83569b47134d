"""Where vocabularies and text embeddings live: ``base.py`` (the contract), ``sqlite.py`` (the
embedded default), ``redis.py`` (shared by replicas)."""
