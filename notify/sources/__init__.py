"""Exports in: CSV and friends, sheets, JSON Lines, SQL dumps and live databases."""

from notify.sources.load import load_sources

__all__ = ["load_sources"]
