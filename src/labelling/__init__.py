"""Labelling with active learning in practice: files exchanged with labelling tools."""
