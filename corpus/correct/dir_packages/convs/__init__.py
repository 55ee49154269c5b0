"""Bonus: as_strided and convolutions from scratch (see functional.py)."""
