"""The one evaluation pass, for detectors and segmenters alike (training steps: the Trainer)."""

from __future__ import annotations

import torch.distributed as dist
from tqdm import tqdm

from vision.engine.distributed import is_main, world_size
from vision.predictor import Predictor


def evaluate(
    predictor: Predictor, reader, evaluator, batch: int = 8, keep: int = 0, observe=None
) -> tuple[dict, list[dict]]:
    """The one evaluation pass (training validation, ``vision eval run``, suites): this rank's
    shard of ``reader`` (items ``rank, rank + world, ...``) through ``predictor`` in batches,
    each batch's results in original pixels handed to ``evaluator.process``. Returns
    ``evaluator.evaluate()`` (collective under ``torch.distributed``) and the first ``keep``
    results of this rank (for drawn samples).

    ``inputs[i]`` holds ``image_id`` and, for segmentation, the original-size ``mask``."""
    predictor.model.eval()
    evaluator.reset()
    rank = dist.get_rank() if dist.is_initialized() else 0
    idx = list(range(rank, len(reader), world_size()))
    kept: list[dict] = []
    seg = predictor.task == "segmentation"
    steps = range(0, len(idx), batch)
    for i in tqdm(steps, desc="validate", disable=not is_main(), leave=False, mininterval=2.0):
        samples = [reader[j] for j in idx[i : i + batch]]
        outputs = predictor([s.image for s in samples])
        inputs = [{"image_id": s.image_id, **({"mask": s.mask} if seg else {})} for s in samples]
        evaluator.process(inputs, outputs)
        if observe is not None:  # e.g. each image's own score (reports choose samples by it)
            observe(samples, outputs)
        kept += outputs[: max(keep - len(kept), 0)]
    return evaluator.evaluate(), kept
