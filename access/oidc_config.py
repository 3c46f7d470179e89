"""Whether the settings turn OIDC on.

Kept apart from ``oidc`` so that a ledger without OIDC never loads PyJWT and
``cryptography`` (~10 MB of memory in every HTTP worker): the API imports ``oidc`` only
when this says an issuer is set."""

from __future__ import annotations

from nexus_ssot.ledger.settings import Settings


def oidc_configured(settings: Settings) -> bool:
    """True when an issuer is set. A half-done configuration raises ``ValueError``
    naming what is missing."""
    if settings.oidc_issuer is None:
        if settings.oidc_audience or settings.oidc_jwks_url or settings.oidc_jwks_file:
            raise ValueError("SSOT_OIDC_ISSUER is unset, yet other SSOT_OIDC_* "
                             "settings are set: set it too, or unset them")
        return False
    if settings.oidc_audience is None:
        raise ValueError("SSOT_OIDC_AUDIENCE must be set with SSOT_OIDC_ISSUER")
    return True

