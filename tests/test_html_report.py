"""The HTML report: one real pytest-ilp run on the tiny world writes its JSON report and its page
(`html:` in ilp.yaml); headless Chromium then loads the page from disk and the DOM is checked
against the JSON report. Screenshots go to the test's folder (`ILP_SCREENSHOTS=DIR` keeps them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_ilp.__main__ import main as ilp_command
from pytest_ilp.core.verdicts import token_pieces
from pytest_ilp.report.check import parse_report
from pytest_ilp.report.html_report import html_page
from pytest_ilp.report.merge import merge_reports

from conftest import assert_round_trip, write_jsonl
from world import World

pytestmark = pytest.mark.fake_world

#: a target no model of the world learned, whose text would end the page's script or fetch an
#: image if the page ever wrote it unescaped.
HOSTILE = ' </script><img src="http://ilp.invalid/pixel.png"> 日本'
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return os.environ.get("ILP_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `out/report.json` and `out/report.html` of one real run: learned and
    unlearned samples over two stages and tags, a must-learn one, a contradicting duplicate
    (data_inconsistency), a hostile target, the base model given (so causes are diagnosed) and
    budgets that the run breaks."""
    folder = tmp_path_factory.mktemp("html_run")
    records: list[dict[str, Any]] = []
    for index, record in enumerate(world.raw_records[:60]):
        records.append(
            {
                **record,
                "stage": "stage1" if index % 3 else "stage2",
                "tags": ["colour"] + (["long"] if len(record["completion"]) > 32 else []),
                "must_learn": index == 55,
            }
        )
    records.append({**world.raw_records[70], "id": "contradicts", "completion": " Nobody knows."})
    records.append({**world.raw_records[3], "id": "hostile", "completion": HOSTILE})
    records += world.chat_records[100:110]
    write_jsonl(folder / "data.jsonl", records)
    (folder / "ilp.yaml").write_text(
        f"checkpoint: {world.checkpoint}\n"
        f"base: {world.checkpoint}\n"
        "data: data.jsonl\n"
        "report: out/report.json\n"
        "html: out/report.html\n"
        "thresholds: {data_inconsistency: 0, total: 0.3}\n",
        encoding="utf-8",
    )
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the budgets are broken
    assert (folder / "out" / "report.html").exists(), result.stdout
    return folder / "out"


@pytest.fixture(scope="module")
def report(run: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((run / "report.json").read_text(encoding="utf-8"))
    # Diagnosed causes, signals, chat turns, token probabilities: the schema and the typed
    # model hold them all.
    assert_round_trip(run / "report.json")
    return document


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium found: apt-get install chromium, or set ILP_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, run: Path) -> Iterator[Any]:
    """The page, opened from disk, with every request it makes and every script error."""
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    opened.requests = []
    opened.errors = []
    opened.on("request", lambda request: opened.requests.append(request.url))
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    assert opened.errors == []
    opened.close()


def _load(page: Any, run: Path, fragment: str = "") -> None:
    page.goto((run / "report.html").as_uri() + fragment)
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
    assert page.get_attribute("body", "data-ready") == "true"  # the first screen came first


def _requested(page: Any) -> list[str]:
    """Every URL the page requested, without its fragment: only the file itself may be there."""
    return [url.split("#")[0] for url in page.requests]


def _screenshot(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    kept = os.environ.get("ILP_SCREENSHOTS")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(kept) / path.name)
    return path


def test_the_html_command_writes_the_page_ilp_html_wrote(run: Path, tmp_path: Path) -> None:
    again = tmp_path / "nested" / "again.html"
    assert ilp_command(["html", str(run / "report.json"), "-o", str(again)]) == 0
    assert again.read_bytes() == (run / "report.html").read_bytes()


def test_the_report_carries_each_unlearned_tokens_probability_and_text(
    report: dict[str, Any],
) -> None:
    samples = {s["id"]: s for s in report["samples"]}
    hostile = samples["hostile"]
    assert hostile["learned"] is False and hostile["target"] == HOSTILE
    pieces = [piece for piece, _ in hostile["target_token_probs"]]
    # The pieces join to the target and its EOS; the CJK characters (several byte-level tokens
    # each) are whole, never half a character.
    assert "".join(pieces).startswith(HOSTILE) and "".join(pieces) != HOSTILE
    assert len(pieces) == hostile["target_tokens"]
    assert not any("\ufffd" in piece for piece in pieces)
    for record in report["samples"]:
        if record["learned"] is False:
            probs = [p for _, p in record["target_token_probs"]]
            divergence = record["first_divergence"]
            assert all(0.0 <= p <= 1.0 for p in probs)
            assert probs[divergence["position"]] == round(divergence["expected_prob"], 4)
        elif record["learned"]:
            assert "target_token_probs" not in record and "prompt" not in record


def test_the_page_shows_the_json_reports_counts_per_cause_and_its_filter_works(
    page: Any, run: Path, report: dict[str, Any]
) -> None:
    _load(page, run)
    causes = Counter(s["cause"] for s in report["samples"] if s["learned"] is False)
    assert len(causes) >= 2  # the run's samples have more than one cause
    assert dict(causes) == report["summary"]["causes"]
    shown = {
        row.get_attribute("data-value"): int(
            row.query_selector(".bar-figure").inner_text().split()[0]
        )
        for row in page.query_selector_all("#cause-chart .bar-row")
    }
    assert shown == {cause: causes.get(cause, 0) for cause in shown}
    assert {c for c, n in shown.items() if n} == set(causes)
    assert page.inner_text("#verdict") == "FAILED"
    assert page.inner_text("#verdict-line") == report["gate"]["verdict"]
    assert page.inner_text("#match-count") == str(len(report["samples"]))

    for cause, count in causes.items():
        page.select_option("#filter-cause", cause)
        assert page.inner_text("#match-count") == str(count)
        shown_causes = {
            c.inner_text() for c in page.query_selector_all("#sample-rows td:nth-child(3)")
        }
        assert shown_causes == {cause}
    # A click on a stage's bar filters the table to that stage.
    page.click("#filter-reset")
    page.click('#stage-chart [data-value="stage2"]')
    stage2 = sum(1 for s in report["samples"] if s["stage"] == "stage2")
    assert page.inner_text("#match-count") == str(stage2)
    assert "stage=stage2" in page.evaluate("location.hash")
    # Search and must-learn combine with it.
    page.select_option("#filter-must", "yes")
    must = [s["id"] for s in report["samples"] if s["must_learn"] and s["stage"] == "stage2"]
    assert page.inner_text("#match-count") == str(len(must))
    assert _requested(page) == [(run / "report.html").as_uri()]


def test_an_opened_unlearned_sample_shows_its_target_shaded_token_by_token(
    page: Any, run: Path, report: dict[str, Any], tmp_path: Path
) -> None:
    record = next(
        s
        for s in report["samples"]
        if s["learned"] is False and s["cause"] and s["prompt"] and s["produced"]
    )
    _load(page, run, f"#outcome=unlearned&open={record['id']}")
    detail = page.query_selector(f'tr.detail[data-id="{record["id"]}"]')
    assert detail is not None
    tokens = detail.query_selector_all(".tokens .tok")
    assert [t.text_content() for t in tokens] == [p for p, _ in record["target_token_probs"]]
    shades = {t.evaluate("t => getComputedStyle(t).backgroundColor") for t in tokens}
    assert len(shades) > 1  # shaded by probability, not one colour
    diverged = detail.eval_on_selector_all(
        ".tokens .tok", "tokens => tokens.flatMap((t, i) => t.matches('.diverged') ? [i] : [])"
    )
    assert diverged == [record["first_divergence"]["position"]]
    text = detail.inner_text()
    for expected in (record["prompt"].strip(), record["cause"], record["suggestion"]):
        assert expected in text
    assert detail.query_selector(".produced").text_content() == record["produced"]
    shot = _screenshot(page, tmp_path / "html-report-opened-sample.png")
    assert shot.stat().st_size > 10_000
    # The screenshot shows the charts (above) and the opened sample.
    assert page.is_visible("#cause-chart") and page.is_visible("#stage-chart")
    assert _requested(page) == [(run / "report.html").as_uri()]


def test_no_text_from_a_sample_escapes_into_the_page_or_fetches_anything(
    page: Any, run: Path
) -> None:
    _load(page, run, "#q=hostile&open=hostile")
    # The search finds the sample, and the evidence of its near-duplicate that names it.
    rows = [row.get_attribute("data-id") for row in page.query_selector_all("tr.row")]
    assert "hostile" in rows
    target = page.query_selector('tr.detail[data-id="hostile"] .tokens')
    assert target is not None and target.text_content().startswith(HOSTILE)
    assert page.query_selector("img") is None
    assert _requested(page) == [(run / "report.html").as_uri()]


def test_the_html_command_names_a_file_that_is_not_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"tests": []}', encoding="utf-8")
    assert ilp_command(["html", str(bad), "-o", str(tmp_path / "page.html")]) == 4
    assert capsys.readouterr().err == (
        f"error: {bad}: not a pytest-ilp report (no `schema` field at the top level)\n"
    )
    assert not (tmp_path / "page.html").exists()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(
        '{"schema": 2, "samples": [{"id": "a", "learned": false}], "summary": {}, '
        '"fragile_margin": 0.1, '
        '"backend": "hf"}',
        encoding="utf-8",
    )
    assert ilp_command(["html", str(truncated), "-o", str(tmp_path / "page.html")]) == 4
    assert capsys.readouterr().err.startswith(
        f"error: {truncated}: not a whole pytest-ilp report (no checkpoint)"
    )
    missing = tmp_path / "missing.json"
    assert ilp_command(["html", str(missing), "-o", str(tmp_path / "page.html")]) == 4
    assert str(missing) in capsys.readouterr().err


def test_with_a_baseline_the_page_lists_regressions_and_fixed_samples(
    report: dict[str, Any],
) -> None:
    """The run's report as a run against a baseline would have written it: the gate is
    evaluated again from the records' `baseline` field by `merge` (a report read back
    carries the gate as written)."""
    against = json.loads(json.dumps(report))
    learned = [s for s in against["samples"] if s["learned"]]
    unlearned = [s for s in against["samples"] if s["learned"] is False]
    learned[0]["baseline"] = "fixed"
    unlearned[0]["baseline"] = "regression"
    unlearned[1]["baseline"] = "known"
    against["gate"]["baseline"] = "old-report.json"
    page = html_page(merge_reports([("report.json", parse_report(against))]))
    section = page.split('id="baseline"')[1].split("</section>")[0]
    assert "old-report.json" in section
    assert '<b class="regression">1</b> regressions' in section
    assert f"<code>{unlearned[0]['id']}</code>" in section
    assert '<b class="fixed">1</b> fixed' in section and learned[0]["id"] in section
    assert '<option value="regression">regression</option>' in page


def test_a_run_that_scores_nothing_writes_a_page_that_says_so(
    pytester: pytest.Pytester, world: World
) -> None:
    write_jsonl(pytester.path / "data.jsonl", world.raw_records[:3])
    pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}",
        "--ilp-data=data.jsonl",
        "--ilp-html=out/page.html",
        "--collect-only",
    )
    page = (pytester.path / "out" / "page.html").read_text(encoding="utf-8")
    assert "<b>0</b>samples" in page and "nothing to show" in page


def test_the_html_command_merges_shard_reports_with_the_merges_checks(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = str(run / "report.json")
    assert ilp_command(["html", report, report, "-o", str(tmp_path / "page.html")]) == 4
    assert "merge the reports of disjoint shards" in capsys.readouterr().err
    assert not (tmp_path / "page.html").exists()


def test_token_pieces_give_a_split_character_to_the_token_that_completes_it() -> None:
    def decode(ids: list[int]) -> str:  # byte-level: each id is one UTF-8 byte
        return bytes(ids).decode("utf-8", errors="replace")

    ids = tuple(" 日x".encode())
    pieces = token_pieces(ids, decode)
    assert pieces == (" ", "", "", "日", "x")
    assert "".join(pieces) == decode(list(ids))


def test_the_page_benchmark_runs_end_to_end(browser: Any) -> None:
    """benchmarks/html_page.py at a small size, so that it cannot rot."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "html_page.py"
    result = subprocess.run(
        [sys.executable, str(script), "--samples", "300", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "300 samples (" in result.stdout and "first screen" in result.stdout
