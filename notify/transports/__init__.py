"""Where messages go: a relay over SMTP, a preview folder, or a test address.

Every transport has the same `open`, `send` and `close` (transports/protocol.py).
"""
