"""Bounces read back: parse a returned message, read its DSN or its text, match it."""
