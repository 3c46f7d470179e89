"""The tested cluster (docs/cluster.md): PostgreSQL primary, synchronous standby and read
replica (``postgres``), a three-node NATS JetStream cluster (``nats``), two ``ssot serve``
nodes and the followers with two candidates each (``topology``), the faults it takes
(``faults``) and the clients' way of failing over between API nodes (``failover``).
``ssot chaos --topology cluster`` runs the chaos clients, nemesis and checker against it.
"""
