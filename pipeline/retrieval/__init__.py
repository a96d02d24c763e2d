"""The index step: FAISS indexes over encoded corpora, sharded encoding."""
