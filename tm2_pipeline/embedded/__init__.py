"""Local stand-ins for production services (the embedded MongoDB-compatible store)."""
