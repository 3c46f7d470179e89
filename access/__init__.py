"""Identity and access: who a caller is (tokens, OIDC/JWT, the bootstrap token), what one
versioned policy lets them do, and the access log of every denial.

Pure where it can be (``identity``, ``globs``, ``policy``, ``tokens``, ``records``,
``flood``): the HTTP edge (``api``) authenticates, asks ``policy`` and records what it
refused with ``log.AccessLog.record``."""
