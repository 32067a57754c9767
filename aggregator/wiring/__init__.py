"""wiring layer."""
