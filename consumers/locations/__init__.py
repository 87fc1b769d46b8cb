"""Live locations: where every cart is now, which went silent, and alerts (DESIGN §5)."""
