"""simo_lite: single-input multi-output model merging, small enough to learn from."""
__version__ = "0.1.0"
