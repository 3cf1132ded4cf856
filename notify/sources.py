"""Read exports into one DataFrame of strings, each row carrying its source and row number."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from notify.errors import SourceError
from notify.models import ROW_COLUMN, SOURCE_COLUMN, SourceSpec


def load_sources(
    specs: Sequence[SourceSpec],
    *,
    root: Path,
    incident_id: str,
    environ: Mapping[str, str],
) -> pd.DataFrame:
    """Read every source and stack their rows, in order, before cleaning."""
    frames = [_load_one(spec, root=root) for spec in specs]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _load_one(spec: SourceSpec, *, root: Path) -> pd.DataFrame:
    if spec.path is None:
        raise SourceError("only [source] path = \"...csv\" is supported so far")
    path = root / spec.path
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding=spec.encoding or "utf-8-sig"
        )
    except FileNotFoundError as exc:
        raise SourceError(
            f"{spec.path}: file not found; put the export there or fix [source] path",
            path=spec.path,
        ) from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise SourceError(f"{spec.path}: cannot read: {exc}", path=spec.path) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame[ROW_COLUMN] = range(2, len(frame) + 2)
    frame[SOURCE_COLUMN] = spec.path
    return frame
