"""All I/O that agents do runs here, as Temporal activities (retried, timed out, visible)."""
