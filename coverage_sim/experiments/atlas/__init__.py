"""Experiments of this project's own (no single paper's figure): the gap atlas (A1)."""
