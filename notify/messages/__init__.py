"""The one way to get built messages for recipients: the check's spool, else the render pool."""
