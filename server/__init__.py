"""HTTP API, settings and the operator CLI ``t4v`` (the composition root)."""
