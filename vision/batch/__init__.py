"""Batch prediction on unlabeled images: ``vision predict``, on one machine or on Ray Data.

``collect`` turns sources (files, folders, globs, lists of paths, a COCO instances JSON) into
items; ``run_predict`` runs a ``PredictJob`` on them with the local engine (decode threads
overlapping batched inference) or the Ray engine (decode tasks, a model actor pool, shards
merged), writing ``predictions.jsonl``, ``errors.jsonl``, ``coco_results.json``, masks,
overlays and ``summary.json`` under the job's folder, resumable and never half-written.
"""

from vision.batch.job import ModelSpec, PredictJob, PredictOptions
from vision.batch.run import run_predict
from vision.batch.sources import Item, collect

__all__ = ["Item", "ModelSpec", "PredictJob", "PredictOptions", "collect", "run_predict"]
