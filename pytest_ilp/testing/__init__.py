"""Helpers for pytest-ilp's own tests, examples and benchmarks: models to test against.

Nothing here is imported by the plugin; importing this package imports no torch.
"""
