"""Where a result came from: git commit, dataset hash, checkpoint, environment."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def dataset_hash(reader) -> str:
    """SHA-1 over the split's annotation and mask files (and image names), in order."""
    h = hashlib.sha1()
    for s in reader.samples:
        h.update(str(s.path.name).encode())
        h.update(s.boxes.tobytes())
        h.update(s.labels.tobytes())
        if s.mask_path is not None and Path(s.mask_path).is_file():
            h.update(Path(s.mask_path).read_bytes())
    return h.hexdigest()[:16]


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(reader, data: str, checkpoint: str, predictor) -> dict:
    """The provenance table of a model report."""
    from eval.fps import environment

    return {
        "git_commit": git_commit(),
        "dataset": data,
        "dataset_hash": dataset_hash(reader),
        "images": len(reader),
        "checkpoint": checkpoint,
        "model": predictor.meta.name,
        "input_size": predictor.size,
        **environment(predictor),
    }
