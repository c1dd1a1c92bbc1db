"""How fast the HTML report of a large run shows its first screen in headless Chromium.

    python benchmarks/html_page.py                      # 100,000 samples, 15% unlearned
    python benchmarks/html_page.py --samples 10000 --repeats 1

It builds a seeded synthetic run through the real report code (`SampleOutcome` records with
verdicts, per-token probabilities, diagnoses and the gate, through `report.build`), writes
its page with `html_report.write_html`, then opens the file in headless Chromium (Debian's
`chromium`, driven by Playwright) and times, per repetition in a fresh page:

* first screen: from navigation start to the page's `ilp-ready` performance mark, set once the
  charts are laid out and the first page of the table is drawn, before the bulk of the records
  is read (the bar: under 3 s);
* every record: to the `ilp-loaded` mark, once every record is parsed and the filters work;
* filter: choosing a cause in the table's filter until the table is drawn again.

It prints the file sizes, the time Python took to write the page, and the medians.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pytest_ilp.core.causes import CAUSES, UNDIAGNOSED  # noqa: E402
from pytest_ilp.core.diagnosis import Diagnosis  # noqa: E402
from pytest_ilp.core.gate import GateSample, Scope, evaluate  # noqa: E402
from pytest_ilp.core.samples import Sample  # noqa: E402
from pytest_ilp.core.thresholds import parse_threshold  # noqa: E402
from pytest_ilp.core.verdicts import Divergence, Verdict  # noqa: E402
from pytest_ilp.report.build import SampleOutcome, build_report  # noqa: E402
from pytest_ilp.report.html_report import write_html  # noqa: E402
from pytest_ilp.report.model import Report  # noqa: E402

#: the causes a rule can decide (every one but undiagnosed).
DIAGNOSED = [c for c in CAUSES if c != UNDIAGNOSED]

WORDS = [
    "the", "of", "a", "capital", "river", "north", "colour", "red",
    "blue", "green", "city", "born", "year", "king", "is",
]  # fmt: skip
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def synthetic_report(samples: int, unlearned_share: float, seed: int = 0) -> Report:
    rng = random.Random(seed)
    outcomes = []
    for i in range(samples):
        n = rng.randint(4, 40)
        pieces = (*(" " + rng.choice(WORDS) for _ in range(n - 1)), "</s>")
        target = "".join(pieces[:-1])
        sample = Sample(
            id=f"s{i:06d}",
            source=Path("data/sft.jsonl"),
            line=i + 1,
            format="prompt_completion",
            target=target,
            prompt=f"Q: question {i} about " + " ".join(rng.choices(WORDS, k=12)) + "? A:",
            stage=rng.choice(["stage1", "stage2", "stage3"]),
            tags=tuple(rng.sample(["geo", "people", "dates", "math", "code"], rng.randint(0, 2))),
        )
        unlearned = rng.random() < unlearned_share
        margin = -rng.expovariate(0.5) if unlearned else rng.expovariate(0.3)
        divergence = None
        produced = None
        probs: tuple[float, ...] = ()
        diagnosis = None
        if unlearned:
            at = rng.randrange(n)
            probs = tuple(
                rng.uniform(0.6, 1.0) if t < at else rng.uniform(0.0, 0.6) for t in range(n)
            )
            divergence = Divergence(at, pieces[at], " the", 7, 8, probs[at], 0.5)
            produced = "".join(pieces[:at]) + " the " + " ".join(rng.choices(WORDS, k=5))
            cause = rng.choice(list(CAUSES))
            diagnosis = Diagnosis(
                cause, f"synthetic evidence for {cause} of sample {i}", "synthetic fix", (cause,)
            )
        verdict = Verdict(
            sample_id=sample.id,
            learned=not unlearned,
            target_ids=tuple(range(n)),
            matched=n if not unlearned else rng.randrange(n),
            first_divergence=divergence,
            nll=rng.expovariate(1.0) * (3 if unlearned else 0.2),
            margin=margin,
            produced=produced,
            produced_stopped=True,
            target_probs=probs,
            target_pieces=pieces if unlearned else (),
        )
        outcomes.append(SampleOutcome(sample, False, verdict, diagnosis=diagnosis))
    gate = evaluate(
        {
            o.sample.id: GateSample(o.sample.id, not o.unlearned, o.cause, o.must_learn)
            for o in outcomes
        },
        [
            Scope(
                "",
                {c: parse_threshold(0.03) for c in DIAGNOSED} | {"total": parse_threshold(0.2)},
                tuple(o.sample.id for o in outcomes),
            )
        ],
    )
    return build_report(
        outcomes,
        checkpoint=Path("/synthetic/checkpoint"),
        backend="hf cpu float32",
        fragile_margin=0.1,
        root=Path.cwd(),
        gate=gate,
    )


def chromium() -> str:
    found = os.environ.get("ILP_CHROMIUM") or shutil.which("chromium")
    if not found:
        sys.exit("no chromium found: apt-get install chromium (or set ILP_CHROMIUM)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--unlearned-share", type=float, default=0.15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="also copy the page here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = synthetic_report(args.samples, args.unlearned_share)
        built = time.perf_counter() - started
        json_size = len(report.to_json().encode())
        page_path = Path(folder) / "report.html"
        started = time.perf_counter()
        write_html(page_path, report)
        written = time.perf_counter() - started
        print(
            f"{args.samples} samples ({report.summary.unlearned} unlearned): report built "
            f"in {built:.1f} s; JSON report {json_size / 1e6:.1f} MB; page "
            f"{page_path.stat().st_size / 1e6:.1f} MB, written in {written:.1f} s"
        )
        if args.keep:
            shutil.copyfile(page_path, args.keep)
        first: list[float] = []
        everything: list[float] = []
        filtered: list[float] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            for _ in range(args.repeats):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(page_path.as_uri(), wait_until="commit")
                page.wait_for_selector("body[data-loaded=true]", timeout=120_000)
                marks = page.evaluate(
                    "['ilp-ready', 'ilp-loaded'].map(m => performance.getEntriesByName(m)[0]"
                    ".startTime / 1000)"
                )
                first.append(marks[0])
                everything.append(marks[1])
                started = time.perf_counter()
                page.select_option("#filter-cause", DIAGNOSED[0])
                page.wait_for_function(
                    "document.querySelector('#sample-rows tr.row td:nth-child(3)')"
                    f"?.textContent === '{DIAGNOSED[0]}'"
                )
                filtered.append(time.perf_counter() - started)
                page.close()
            version = browser.version
            browser.close()
    print(f"chromium {version}, {args.repeats} repetitions, medians:")
    print(f"  first screen {statistics.median(first):.2f} s (each: {_list(first)})")
    print(
        f"  every record parsed, filters live {statistics.median(everything):.2f} s "
        f"(each: {_list(everything)})"
    )
    print(f"  filter by cause {statistics.median(filtered):.3f} s (each: {_list(filtered)})")


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
