"""Status page: the on-call view the receiver serves at `/`."""

from .page import CSP, setup

__all__ = ["CSP", "setup"]
