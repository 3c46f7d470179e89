"""Contract suites: one behaviour, several implementations. Each suite here is an abstract
test class that each lane subclasses with the implementation it can run (the in-memory
twin in tests/unit, the PostgreSQL one in tests/integration)."""
