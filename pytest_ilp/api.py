"""The plugin's checks as plain Python, for notebooks, build scripts and benchmarks.

    from pytest_ilp.api import score_checkpoint
    verdicts = score_checkpoint("out/final", "data/sft.jsonl")
    unlearned = [v for v in verdicts.values() if not v.learned]

`score_checkpoint` runs `pytest_ilp.check` (the pipeline a pytest run goes through, without
pytest's collection) and returns its verdicts. `score_model` scores a model in memory, as
`ILPCallback` does during training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_ilp.config.settings import Settings
from pytest_ilp.core.backends import BackendOptions, LiveModel
from pytest_ilp.core.checkpoint import in_memory
from pytest_ilp.core.criteria import EXACT, Criterion, parse_criterion
from pytest_ilp.core.datafiles import load_samples
from pytest_ilp.core.datapaths import expand_data_paths
from pytest_ilp.core.errors import SampleProblem
from pytest_ilp.core.render import RenderSettings
from pytest_ilp.core.run import check
from pytest_ilp.core.samples import Sample
from pytest_ilp.core.scoring import Job, ScoringResult, score_samples
from pytest_ilp.core.verdicts import Verdict


def read_samples(*paths: str | Path) -> list[Sample]:
    """Every sample of these data files or folders, ids unique across them."""
    taken: dict[str, Sample] = {}
    samples: list[Sample] = []
    for path in expand_data_paths([Path(p) for p in paths]):
        samples.extend(load_samples(path, taken=taken))
    return samples


def score_checkpoint(
    checkpoint: str | Path,
    samples: Sequence[Sample] | str | Path,
    *,
    backend: str = "hf",
    options: BackendOptions | None = None,
    render: RenderSettings | None = None,
    cache_dir: str | Path | None = None,
    generate_max_tokens: int = 64,
    criterion: Criterion | str | Mapping[str, Any] = EXACT,
) -> dict[str, Verdict]:
    """Verdicts by sample id. Raises `SampleProblem` if a sample cannot be checked.

    The verdicts of `pytest_ilp.check` (the whole check, through the same pipeline as a pytest
    run), for callers that need no more; `check` also gives the diagnoses, the gate and the
    report. `criterion` judges every sample whose record names none (`"token_accuracy:0.9"`,
    `{"sampled": {"n": 5}}`, see `pytest_ilp.core.criteria`). `cache_dir` enables the same disk
    cache a pytest run uses (off by default).
    """
    settings = Settings(
        checkpoint=Path(checkpoint).absolute(),
        backend=backend,
        generate_max_tokens=generate_max_tokens,
        criterion=parse_criterion(criterion),
        use_cache=cache_dir is not None,
    )
    if options is not None:
        settings = settings.with_backend_options(options)
    if render is not None:
        settings = settings.with_render(render)
    data = [samples] if isinstance(samples, (str, Path)) else list(samples)
    run = check(data=data, config=settings, cache_dir=cache_dir)
    if run.problems:
        sample_id, problem = next(iter(run.problems.items()))
        raise SampleProblem(
            f"sample {sample_id}: {problem} ({len(run.problems)} sample(s) cannot be checked)"
        )
    return dict(run.verdicts)


def _silent(total: int) -> None:
    return None


def score_model(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Sample],
    *,
    folder: str | Path = "in-memory",
    produce: bool = True,
    options: BackendOptions | None = None,
    render: RenderSettings | None = None,
    generate_max_tokens: int = 64,
    criterion: Criterion | str | Mapping[str, Any] = EXACT,
) -> ScoringResult:
    """Score a transformers model in memory (a training run's), as `score_checkpoint` scores
    the same weights saved with `save_pretrained` into `folder`: the same rendering, batching
    and verdicts, on the model's own device and in its own dtype. Nothing is cached.

    The model is in eval mode for the pass (dropout would change the figures), then back in
    the mode it was in. `produce=False` skips generating what the unlearned samples produce
    (the verdicts stay the same). `criterion` judges the samples whose records name none, as in
    `score_checkpoint`. Samples that cannot be checked are in the result's `problems`. The
    result, given to `pytest_ilp.check(model=..., scored=...)`, is not scored again there.
    """
    settings = Settings(
        checkpoint=Path(folder),
        use_cache=False,
        generate_max_tokens=generate_max_tokens,
        criterion=parse_criterion(criterion),
    )
    settings = settings.with_backend_options(options or BackendOptions())
    settings = settings.with_render(render or RenderSettings())
    info = in_memory(model, Path(folder))
    job = Job(
        info,
        info,
        produce=produce,
        live=LiveModel(model, tokenizer),
        criteria={s.id: settings.criterion_for(s) for s in samples},
    )
    return score_samples(samples, settings, job, None, log=lambda _: None, progress=_silent)
