"""The delivery ledger: every recipient's state, every change of it, kill -9 safe.

schema       the tables and their recorded migrations
store        open a ledger; register recipients; read states, history, suppressions
claims       which sender works on which recipients (leases, heartbeats, pacing)
transitions  every state change after a send: bounces, refusals, give-ups, suppressions
inbox        customers' replies, each recorded once, and whether it was answered
"""

from notify.ledger.schema import SCHEMA_VERSION
from notify.ledger.store import Ledger, LedgerRecipient, Registration

__all__ = ["SCHEMA_VERSION", "Ledger", "LedgerRecipient", "Registration"]
