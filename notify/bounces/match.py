"""Which recipient a bounce is for: by VERP token, by our Message-ID, then by address."""

from __future__ import annotations

import re
from collections.abc import Sequence

from notify.bounces.parse import Bounce
from notify.ledger import Ledger, store
from notify.ledger.store import LedgerRecipient

TEST_PREFIX = "test-"  # a test send's Message-ID: <test-RANDOM.INCIDENT@domain>
_MESSAGE_ID_TOKEN = re.compile(r"<?([0-9a-f]{24})\.")  # our Message-IDs: <TOKEN.INCIDENT@domain>


class Matcher:
    """Finds a bounce's recipient: by VERP token, by our Message-ID, then by address."""

    def __init__(self, ledger: Ledger, incident_id: str) -> None:
        self.ledger, self.incident_id = ledger, incident_id
        self._by_address: dict[str, LedgerRecipient] | None = None

    def find(self, bounce: Bounce) -> tuple[LedgerRecipient | None, str]:
        if any(m.lstrip("<").startswith(TEST_PREFIX) for m in bounce.original_message_ids):
            return None, "returns a test send, which no customer's record is touched by"
        tokens = [*bounce.verp_tokens, *_message_id_tokens(bounce.original_message_ids)]
        found = store.by_tokens(self.ledger, tokens)
        ours = [r for r in found.values() if r.incident_id == self.incident_id]
        if ours:
            return ours[0], ""
        if found:
            other = next(iter(found.values())).incident_id
            return None, f"for incident {other}: run notify bounces --incident {other}"
        for failed in bounce.recipients:
            match = self.addresses().get((failed.address or "").lower())
            if match is not None:
                return match, ""
        named = ", ".join(f.address for f in bounce.recipients if f.address) or "no address"
        return None, f"names {named}, which is no recipient of incident {self.incident_id}"

    def addresses(self) -> dict[str, LedgerRecipient]:
        """Every address the incident wrote to, read once and only when needed."""
        if self._by_address is None:
            self._by_address = {}
            for r in store.recipients(self.ledger, self.incident_id):
                for address in (r.email, r.sent_to):
                    if address:
                        self._by_address.setdefault(address.lower(), r)
        return self._by_address


def _message_id_tokens(message_ids: Sequence[str]) -> list[str]:
    return [m[1] for m in map(_MESSAGE_ID_TOKEN.match, message_ids) if m]
