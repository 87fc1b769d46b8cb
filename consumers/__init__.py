"""Long-running consumer services, each on the shared run loop (gremio.runner)."""
