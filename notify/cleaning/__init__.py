"""Raw rows to recipients: addresses checked, rows merged by address, look-alikes found."""
