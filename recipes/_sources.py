"""Reading and column lookup shared by the ``prepare_*_data.py`` scripts (each imports it from this directory)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class SchemaError(ValueError):
    """A source does not have the columns or values a script needs."""


@dataclass(frozen=True)
class HubSource:
    repo: str
    split: str
    config: str | None = None


def read_local(path: str | Path) -> list[dict]:
    """Rows of a local ``.jsonl`` / ``.jsonl.gz`` / ``.json`` (list) / ``.parquet`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name
    if name.endswith(".parquet"):
        return pd.read_parquet(path).to_dict("records")
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if name.endswith(".json"):
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise SchemaError(f"{path}: a .json source must hold a list of objects")
        return rows
    raise SchemaError(f"{path}: unsupported file type (use .jsonl, .jsonl.gz, .json or .parquet)")


def read_hub(source: HubSource) -> list[dict]:
    """Rows of a hub dataset split (imports ``datasets`` only here; needs internet)."""
    from datasets import load_dataset

    return [dict(row) for row in load_dataset(source.repo, source.config, split=source.split)]


def lookup(row: dict, dotted: str):
    """``row["a"]["b"]`` for ``"a.b"``; None where any part is missing."""
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def find_column(rows: list[dict], candidates: tuple[str, ...], what: str, origin: str) -> str:
    """The first of ``candidates`` the first row has; SchemaError naming ``origin`` otherwise."""
    for name in candidates:
        if lookup(rows[0], name) is not None:
            return name
    raise SchemaError(f"{origin}: no {what} column; expected one of {list(candidates)}, found {sorted(rows[0])}")


def check_names(names, local: dict[str, str], known) -> None:
    """Stop with the list of choices when ``names`` or ``--local`` name a dataset the script does not know."""
    unknown = [n for n in list(names) + list(local) if n not in known]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; choose from {list(known)}")


def parse_local(parser, items: list[str]) -> dict[str, str]:
    """``--local NAME=PATH`` arguments as ``{NAME: PATH}``; a malformed one is a usage error."""
    local = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--local expects NAME=PATH, got {item!r}")
        local[name.strip()] = path.strip()
    return local


def write_datasets(out_dir: Path, datasets, tag: str, limit: int | None = None) -> dict[str, Path]:
    """Write ``(name, split, rows, note)`` datasets as veRL parquet files; return them by name.

    The train split goes to ``train.parquet``; each test dataset to ``<name>.parquet`` and all of them together
    to ``test.parquet`` (the recipes' validation file). ``limit`` keeps the first rows of each dataset.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written, test_frames = {}, []
    for name, split, rows, note in datasets:
        frame = pd.DataFrame(rows[:limit] if limit is not None else rows)
        key = "train" if split == "train" else name
        path = out_dir / f"{key}.parquet"
        frame.to_parquet(path)
        written[key] = path
        if split == "test":
            test_frames.append(frame)
        print(f"[{tag}] {name}: {len(frame)} rows -> {path}{note}")
    if test_frames:
        path = out_dir / "test.parquet"
        pd.concat(test_frames, ignore_index=True).to_parquet(path)
        written["test"] = path
        print(f"[{tag}] test (all test datasets): {sum(map(len, test_frames))} rows -> {path}")
    return written
