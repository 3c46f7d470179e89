"""The HTTP edge: the ledger's commands and queries, its views and its integrity checks
as a FastAPI app (``app.py`` composes it).

Each resource's routes are a module of their own (entries, history, namespaces, batch,
restore, events, audit, health, consistency, views, digests, verify). What they share:
``params.py`` (parameter types, error responses, the service a request reaches),
``pagination.py``, ``writes.py`` (a write request to the writer and back), ``http.py``
(request inputs), ``negotiation.py`` (Accept), ``errors.py`` (problem+json), ``models.py``
and ``openapi.py`` (the served document)."""
