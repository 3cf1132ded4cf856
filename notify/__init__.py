"""notify: tell every customer hit by an incident, personally, correctly, once, and fast."""

from __future__ import annotations

__version__ = "0.1.0"
