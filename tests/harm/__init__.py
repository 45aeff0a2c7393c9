"""The harm matrix: unmodified apps run disabled, enabled and in observe mode (see docs/harm.md)."""
