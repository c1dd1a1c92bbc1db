"""The run's outputs: the JSON report as typed data (`model`, `records`; read back by `check`),
built from a run (`build`), merged (`merge`), and its views (terminal, one sample's text,
Markdown, HTML, the remediation export), each drawn from a `Report`.
"""
