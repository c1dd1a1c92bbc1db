"""The check itself, with no pytest in it: samples -> render -> backends -> verdicts -> signals
-> diagnosis -> gate. The plugin, the Python API, the CLI and the trainer callback call it.
"""
