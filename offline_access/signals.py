"""Signals for consents and offline tokens, sent after the transaction commits.

Connect a receiver to tell the user ("X can now access your account while you
are away") or to feed an audit log. Every signal is sent once the change is
committed, so a receiver never sees a change that is later rolled back, and
through ``send_robust``: a failing receiver is logged and never undoes or breaks
the change. Receivers should be quick or hand work to a queue.

Arguments, besides ``sender`` (the model class):

- ``consent_granted``, ``consent_renewed``: ``consent`` (:class:`~offline_access.models.Consent`),
  ``actor`` (the user who gave it, the administrator, or None for a command), ``via``
  (a :class:`~offline_access.models.ConsentEvent.Via` value).
- ``consent_revoked``: ``consent``, ``actor`` (None for a command), ``reason``, ``via``.
- ``consent_expired``: ``consent``.
- ``offline_token_issued``: ``family`` (:class:`~offline_access.models.OfflineTokenFamily`,
  a new device or installation), ``consent_id``.
- ``offline_token_refreshed``: ``family`` (its consent loaded).
- ``offline_tokens_revoked``: ``families`` (list of the families that still had live
  tokens), ``actor``, ``reason``, ``via`` (``"system"`` when their consent expired; None
  when the tokens ran out on their own: idle timeout, absolute lifetime, or a refresh
  that dropped ``offline_access``).
"""

from __future__ import annotations

import logging
from functools import partial

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger("offline_access")

consent_granted = Signal()
consent_renewed = Signal()
consent_revoked = Signal()
consent_expired = Signal()
offline_token_issued = Signal()
offline_token_refreshed = Signal()
offline_tokens_revoked = Signal()


def send_after_commit(signal: Signal, sender, **kwargs) -> None:
    """Send ``signal`` once the current transaction commits (at once outside one)."""
    if signal.has_listeners(sender):
        transaction.on_commit(partial(_send, signal, sender, kwargs))


def _send(signal: Signal, sender, kwargs) -> None:
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            log.error("Receiver %r of an offline-access signal failed.", receiver, exc_info=result)
