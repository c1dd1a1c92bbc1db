"""GGUF checkpoints: the header read without the gguf package, and clear errors for bad files.

The real GGUF model (SmolLM2) is checked end to end in test_real_model.py; these tests write
small GGUF files with the gguf package's own writer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_ilp.core.checkpoint import inspect_checkpoint, read_gguf_metadata
from pytest_ilp.core.errors import IlpUsageError

gguf = pytest.importorskip("gguf", reason="the gguf package is in the [gguf] and [dev] extras")


def write_gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(4096)
    writer.add_vocab_size(3)
    writer.add_token_list(["<s>", "</s>", "hi"])
    writer.add_eos_token_id(1)
    writer.add_chat_template("{{ messages }}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_header_gives_context_vocabulary_and_eos(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.Q4_0.gguf")
    metadata = read_gguf_metadata(path)
    assert metadata["general.architecture"] == "llama"
    assert metadata["tokenizer.ggml.tokens"] == 3  # arrays come back as their length
    assert metadata["tokenizer.chat_template"] == "{{ messages }}"
    for given in (path, tmp_path):  # the file, or the folder holding it
        info = inspect_checkpoint(given)
        assert (info.folder, info.gguf_file, info.name) == (tmp_path, path.name, path.name)
        assert info.max_length == 4096 and info.config["vocab_size"] == 3
        assert info.generation_stop_ids() == {1}
        assert info.load_arguments() == {"gguf_file": path.name}


def test_a_broken_gguf_file_is_a_usage_error_naming_it(pytester: pytest.Pytester) -> None:
    whole = write_gguf(pytester.path / "whole.gguf").read_bytes()
    (pytester.path / "cut.gguf").write_bytes(whole[:40])
    (pytester.path / "data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    result = pytester.runpytest("--ilp-checkpoint=cut.gguf", "--ilp-data=data.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cut.gguf is not a readable GGUF file (the file ends inside*"])
    assert "Traceback" not in result.stderr.str()


def test_a_folder_with_several_gguf_files_asks_for_one(tmp_path: Path) -> None:
    write_gguf(tmp_path / "a.gguf")
    write_gguf(tmp_path / "b.gguf")
    with pytest.raises(IlpUsageError, match=r"holds 2 \.gguf files \(a\.gguf, b\.gguf\)"):
        inspect_checkpoint(tmp_path)


def test_within_gguf_loading_a_file_is_parsed_once_until_it_changes_and_draws_no_bar(
    tmp_path: Path,
) -> None:
    from pytest_ilp.core.backends.gguf_loading import gguf_loading

    path = write_gguf(tmp_path / "model.gguf")
    from transformers import modeling_gguf_pytorch_utils as transformers_gguf

    originals = gguf.GGUFReader, gguf.get_tensor_name_map, transformers_gguf.tqdm
    original_reader = originals[0]
    with gguf_loading():
        # transformers imports these from gguf where it calls them: it gets these ones.
        from gguf import GGUFReader, get_tensor_name_map

        first = GGUFReader(path)
        assert GGUFReader(str(path)) is first
        assert isinstance(first, original_reader) and len(first.fields) == len(
            original_reader(path).fields
        )
        names = get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        assert get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is names
        assert names.get_name("model.layers.1.self_attn.q_proj") == "blk.1.attn_q"
        write_gguf(tmp_path / "other.gguf").replace(path)  # another file at the same path
        assert GGUFReader(path) is not first
        assert transformers_gguf.tqdm(range(3)).disable  # its de-quantizing bar
    assert (gguf.GGUFReader, gguf.get_tensor_name_map, transformers_gguf.tqdm) == originals
    assert original_reader(path) is not original_reader(path)
