"""The run's outputs: the JSON report and its merge, and the views of it (terminal, Markdown,
HTML, exports).
"""
