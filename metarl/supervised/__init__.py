"""Supervised adapters that reuse the sequence cores (sequence tasks, trainer)."""
