"""The webhook dispatcher (SPEC §12): level-changes to HTTP endpoints, signed."""
