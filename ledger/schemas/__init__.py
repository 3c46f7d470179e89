"""Schema governance: a namespace's JSON Schema (draft 2020-12) and the shared definitions
it refers to, kept as entries of the system namespace ``_schemas`` (so they have versions,
history, time travel, audit and broadcast like any entry), compiled once per version and
enforced by ``decide`` on every write.

    records        what is stored: the schema, its pinned definitions, the flags
    references     the ``$ref``s a schema makes, resolved only inside the ledger
    compiler       meta-schema check, compiling, violations, the cache of compiled schemas
    compatibility  would every document valid under the old schema be valid under the new
"""
