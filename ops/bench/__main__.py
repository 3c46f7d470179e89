"""``python -m nexus_ssot.ops.bench``: the whole bench run (see ``run``)."""

import sys

if __name__ == "__main__":
    # Only when run: the worker processes (spawned) never run the bench again.
    from nexus_ssot.ops.bench.run import main

    sys.exit(main())
