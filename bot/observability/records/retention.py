"""Retention of the record files: ``CALL_RECORDS_RETENTION_DAYS`` removes old day folders.

Records live in ``<CALL_RECORDS_DIR>/<YYYY-MM-DD>/`` (``serialise.record_path``), so pruning
is deleting the folders of days that ended before the cutoff. Only folders named like a date
are touched: anything else an operator put there stays.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loguru import logger


def prune_record_files(records_dir: Path, older_than_secs: float, now: float) -> int:
    """Remove the day folders whose whole day is older than the cutoff; how many files."""
    root = Path(records_dir)
    if not root.is_dir():
        return 0
    cutoff = datetime.fromtimestamp(now, tz=UTC) - timedelta(seconds=older_than_secs)
    removed = 0
    for folder in root.iterdir():
        try:
            day = datetime.strptime(folder.name, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            continue
        if not folder.is_dir() or day + timedelta(days=1) > cutoff:
            continue
        count = sum(1 for p in folder.iterdir() if p.is_file())
        try:
            shutil.rmtree(folder)
        except OSError as e:
            logger.warning(f"retention: could not remove {folder}: {e}")
            continue
        removed += count
    return removed
