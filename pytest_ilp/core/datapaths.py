"""Which paths are SFT data: data files, folders of them (walked once, links and all) and
datasets saved with `save_to_disk`."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from pytest_ilp.core.errors import IlpDataError
from pytest_ilp.core.samples import TABLE_SUFFIXES

TEXT_SUFFIXES = (".jsonl", ".json", ".yaml", ".yml")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + TABLE_SUFFIXES


def is_data_path(path: Path) -> bool:
    """Whether pytest-ilp reads this path as a data file (or a saved dataset folder)."""
    if path.is_dir():
        return is_saved_dataset(path)
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def is_saved_dataset(path: Path) -> bool:
    try:
        return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    except OSError:  # an unreadable folder: the walk that found it says so
        return False


def expand_data_paths(paths: Sequence[Path]) -> list[Path]:
    """Files stay as they are; a folder becomes its data files (recursively, sorted).

    A folder saved with `datasets.Dataset.save_to_disk` counts as one data path. Symbolic links
    are followed, but a file or folder reached twice (a link to one already read, a link loop
    such as ``self -> .``, a link to a folder above) is read once. Raises `IlpDataError` for a
    missing path, a folder with no data in it, and anything named like data that cannot be
    read: an unreadable folder, a dangling link, a link loop, a FIFO or device.
    """
    expanded: list[Path] = []
    for path in paths:
        kind = kind_of(path)
        if kind is None:
            raise IlpDataError(f"{path}: no such file or folder (given as ILP data)")
        if kind == "folder" and not is_saved_dataset(path):
            found = _data_in_folder(path)
            if not found:
                raise IlpDataError(
                    f"{path}: the folder holds no data files ({', '.join(SUPPORTED_SUFFIXES)})"
                )
            expanded.extend(found)
            continue
        if kind not in ("file", "folder"):
            raise IlpDataError(f"{path}: {kind}; give a data file or a folder of them")
        if not is_data_path(path):
            raise IlpDataError(
                f"{path}: unsupported data file type {path.suffix!r}; "
                f"use one of {', '.join(SUPPORTED_SUFFIXES)} or a saved datasets folder"
            )
        expanded.append(path)
    # One file reached by two paths (a link and its target) is one data file.
    unique: dict[Path, Path] = {}
    for path in expanded:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def kind_of(path: Path) -> str | None:
    """ "file", "folder", None when nothing is there, or what else it is, in words."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link points back at itself)"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    other = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
    )
    return f"{other}, not a regular file"


def is_link_loop(path: Path) -> bool:
    """Whether `path` is a symbolic link to a folder that contains it (`self -> .`, `up -> ..`)."""
    if not path.is_symlink():
        return False
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link or a loop of links
        return False
    parent = path.parent.resolve()
    return real == parent or real in parent.parents


def _data_in_folder(folder: Path) -> list[Path]:
    """The data files and saved datasets under `folder`, sorted, each real folder walked once."""
    found: list[Path] = []
    walked = {folder.resolve()}
    above = set(folder.resolve().parents)
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise IlpDataError(
                f"{current}: cannot read this folder of ILP data ({exc.strerror or exc}); "
                "make it readable or move it out of the data folder"
            ) from None
        for entry in entries:
            path = Path(entry.path)
            named_like_data = path.suffix.lower() in SUPPORTED_SUFFIXES
            kind = kind_of(path)
            if kind == "folder":
                real = path.resolve()
                if real in walked or real in above:
                    continue  # a link loop or a link up the tree: its files are read once
                walked.add(real)
                if is_saved_dataset(path):
                    found.append(path)
                else:
                    pending.append(path)
            elif kind == "file":
                if named_like_data:
                    found.append(path)
            elif named_like_data:
                raise IlpDataError(
                    f"{path}: {kind or 'vanished while the folder was read'}; "
                    "fix it or remove it from the data folder"
                )
    return sorted(found)
