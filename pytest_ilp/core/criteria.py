"""How "learned" is judged: the criteria a sample's verdict is decided by.

=================  ==========================================================================
criterion          the sample is learned when ...
=================  ==========================================================================
``exact``          greedy decoding reproduces the target, then a stop token (the default)
``prefix:N``       greedy decoding reproduces the first N target tokens
``token_accuracy`` at least a share X of the target tokens are the greedy next token under
``:X``             teacher forcing
``nll:Y``          the target's mean negative log-likelihood is at most Y nats/token
``normalized``     the greedy output equals the target once both are normalised (`normalize`)
``choice``         the target's log-likelihood beats that of every wrong response in the
                   record's ``distractors`` (Xue et al. 2026, Eq. 1); ``choice:mean`` (default)
                   compares the per-token mean, ``choice:sum`` the sum
``sampled``        of ``n`` sampled completions (``temperature``, ``seed``), at least a share
                   ``min_pass`` reproduces the target (pass@n)
=================  ==========================================================================

A criterion is written as text (``prefix:8``, ``sampled:n=5,temperature=0.7``), as a mapping
(``{prefix: 8}``, ``{sampled: {n: 5}}``, ``{name: sampled, n: 5}``) or as marker arguments.
`parse_criterion` reads them all and raises `ValueError` saying what is wrong. This module is
pure: no torch, no pytest.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAMES = ("exact", "prefix", "token_accuracy", "nll", "normalized", "choice", "sampled")
#: `choice`: how the options' log-likelihoods are compared.
CHOICE_SCORES = ("mean", "sum")
#: the defaults of `sampled` (the paper's BoN-5, learned when pass@5 >= 0.2).
SAMPLED_DEFAULTS: Mapping[str, float | int] = {
    "n": 5,
    "temperature": 0.7,
    "min_pass": 0.2,
    "seed": 0,
}
#: the one parameter of the criteria that take a single value, by criterion.
SINGLE_PARAMETER = {"prefix": "tokens", "token_accuracy": "min", "nll": "max", "choice": "score"}

EXAMPLES = (
    "exact, prefix:8, token_accuracy:0.9, nll:1.5, normalized, choice, choice:sum, "
    "sampled:n=5,temperature=0.7,min_pass=0.2,seed=0"
)


@dataclass(frozen=True)
class Criterion:
    """One criterion with its parameters; only those of `name` are set (see `parse_criterion`).

    `tokens`: prefix length (prefix). `threshold`: the least token accuracy (token_accuracy),
    the largest mean NLL (nll), the least pass rate (sampled). `score`: "mean" or "sum"
    (choice). `n`, `temperature`, `seed`: sampled.
    """

    name: str = "exact"
    tokens: int | None = None
    threshold: float | None = None
    score: str | None = None
    n: int | None = None
    temperature: float | None = None
    seed: int | None = None

    @property
    def spec(self) -> str:
        """The canonical text form, which `parse_criterion` reads back (and the cache keys)."""
        if self.name == "prefix":
            return f"prefix:{self.tokens}"
        if self.name in ("token_accuracy", "nll"):
            return f"{self.name}:{self.threshold:g}"
        if self.name == "choice":
            return f"choice:{self.score}"
        if self.name == "sampled":
            return (
                f"sampled:n={self.n},temperature={self.temperature:g},"
                f"min_pass={self.threshold:g},seed={self.seed}"
            )
        return self.name

    @property
    def label(self) -> str:
        """How a person reads it, e.g. "token accuracy >= 0.9"."""
        if self.name == "prefix":
            return f"prefix of {self.tokens} tokens"
        if self.name == "token_accuracy":
            return f"token accuracy >= {self.threshold:g}"
        if self.name == "nll":
            return f"mean NLL <= {self.threshold:g} nats/token"
        if self.name == "choice":
            return f"choice ({self.score} log-likelihood)"
        if self.name == "sampled":
            return (
                f"sampled pass rate >= {self.threshold:g} of n={self.n} at "
                f"T={self.temperature:g} (seed {self.seed})"
            )
        return self.name

    @property
    def needs_greedy_output(self) -> bool:
        """Whether the verdict needs the greedy output as text (not only the forward pass)."""
        return self.name == "normalized"


EXACT = Criterion()


def parse_criterion(raw: Any, *args: Any, **params: Any) -> Criterion:
    """A `Criterion` from its text, a mapping, or a name with arguments (a marker's).

    Raises `ValueError` with what is wrong and what is accepted.
    """
    if isinstance(raw, Criterion) and not args and not params:
        return raw
    if isinstance(raw, Mapping) and not args and not params:
        return _from_mapping(raw)
    if raw is None and params and not args:
        # A marker written as ilp_criterion(token_accuracy=0.9) or (name="sampled", n=5).
        return _from_mapping(params)
    if not isinstance(raw, str):
        raise ValueError(f"expected a criterion such as {EXAMPLES}; got {raw!r}")
    name, _, rest = raw.strip().partition(":")
    name = name.strip()
    if rest.strip():
        if args or params:
            raise ValueError(f"{raw!r}: give the parameters once, in the text or as arguments")
        if "=" in rest:
            for pair in rest.split(","):
                key, equals, value = pair.partition("=")
                if not equals or not key.strip():
                    raise ValueError(f"{raw!r}: expected key=value pairs after the colon")
                params[key.strip()] = _number(value.strip())
        else:
            args = (_number(rest.strip()),)
    return _build(name, args, params)


def _from_mapping(raw: Mapping[str, Any]) -> Criterion:
    if "name" in raw:
        params = {str(k): v for k, v in raw.items() if k != "name"}
        return _build(str(raw["name"]), (), params)
    if len(raw) != 1:
        raise ValueError(
            f"expected one criterion, like {{token_accuracy: 0.9}} or {{sampled: {{n: 5}}}}; "
            f"got {dict(raw)!r}"
        )
    ((name, value),) = raw.items()
    if isinstance(value, Mapping):
        return _build(str(name), (), {str(k): v for k, v in value.items()})
    return _build(str(name), () if value is None else (value,), {})


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _build(name: str, args: tuple[Any, ...], params: dict[str, Any]) -> Criterion:
    if name not in NAMES:
        raise ValueError(f"unknown criterion {name!r}; choose one of {', '.join(NAMES)}")
    if name in ("exact", "normalized"):
        if args or params:
            raise ValueError(f"{name} takes no parameters")
        return Criterion(name)
    if name == "sampled":
        if args:
            raise ValueError("sampled takes named parameters: n, temperature, min_pass, seed")
        unknown = sorted(set(params) - set(SAMPLED_DEFAULTS))
        if unknown:
            raise ValueError(
                f"sampled: unknown parameter(s) {', '.join(unknown)}; known: "
                f"{', '.join(SAMPLED_DEFAULTS)}"
            )
        values = {**SAMPLED_DEFAULTS, **params}
        n = _integer(values["n"], "sampled: n", least=1)
        temperature = _real(values["temperature"], "sampled: temperature")
        if temperature <= 0:
            raise ValueError(
                "sampled: temperature must be above 0 (temperature 0 is greedy: use exact)"
            )
        min_pass = _share(values["min_pass"], "sampled: min_pass")
        seed = _integer(values["seed"], "sampled: seed", least=0)
        return Criterion(name, threshold=min_pass, n=n, temperature=temperature, seed=seed)
    key = SINGLE_PARAMETER[name]
    if len(args) > 1 or set(params) - {key} or (args and params):
        raise ValueError(f"{name} takes one parameter ({key}); got {args!r} {params!r}")
    if args:
        value = args[0]
    elif params:
        value = params[key]
    elif name == "choice":
        value = "mean"
    else:
        raise ValueError(f"{name} needs a value, e.g. {_EXAMPLE[name]}")
    if name == "prefix":
        return Criterion(name, tokens=_integer(value, "prefix", least=1))
    if name == "token_accuracy":
        return Criterion(name, threshold=_share(value, "token_accuracy"))
    if name == "nll":
        threshold = _real(value, "nll")
        if threshold < 0:
            raise ValueError(f"nll: the largest mean NLL must not be negative, got {value!r}")
        return Criterion(name, threshold=threshold)
    if value not in CHOICE_SCORES:
        raise ValueError(f"choice: score must be one of {', '.join(CHOICE_SCORES)}, got {value!r}")
    return Criterion(name, score=str(value))


_EXAMPLE = {"prefix": "prefix:8", "token_accuracy": "token_accuracy:0.9", "nll": "nll:1.5"}


def _integer(value: Any, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{what} must be an integer of at least {least}, got {value!r}")
    return value


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def _share(value: Any, what: str) -> float:
    share = _real(value, what)
    if not 0 < share <= 1:
        raise ValueError(f"{what} must be a share in (0, 1], got {value!r}")
    return share


# -- deciding ----------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The text `normalized` compares: Unicode NFKC, case folded, punctuation removed, runs of
    whitespace made one space, trimmed.

    Punctuation is every character of a Unicode "P" category (``.,;:!?'"()[]{}-_/`` and their
    non-ASCII kin), removed without a trace, as SQuAD's answer normalisation does. Symbols
    (``+ = $ % <``), digits and words are kept: they change what an answer says. Articles are
    kept too (SQuAD drops English ones), so the rule holds in every language.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return " ".join(text.split())


def choice_scores(logprobs: Mapping[str, list[float]], score: str) -> dict[str, float]:
    """Each option's score from its per-token log-probabilities: their sum, or their mean."""
    if score == "sum":
        return {k: float(sum(v)) for k, v in logprobs.items()}
    return {k: float(sum(v)) / len(v) for k, v in logprobs.items()}
