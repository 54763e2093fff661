"""The one evaluation pass on a tiny reader (batches, kept results, the observe hook, masks,
its progress bar), the fine-tuning recipe and the backbone's parameters."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from vision.engine.loop import evaluate
from vision.engine.train import backbone_parameters, finetune_config
from vision.recipe import validate

from .test_hooks_units import Evaluator, Predictor, Reader

# ---- the evaluation pass --------------------------------------------------------------------


def test_evaluate_batches_keeps_and_observes():
    p, ev, seen = Predictor(), Evaluator(), []
    results, kept = evaluate(
        p, Reader(5), ev, batch=2, keep=3, observe=lambda s, o: seen.append(len(s))
    )
    assert results == {"m": {"score": 0.5}} and ev.calls == ["reset", "evaluate"]
    assert p.batches == [2, 2, 1] and seen == [2, 2, 1] and not p.model.training
    assert kept == [{"i": 0}, {"i": 1}, {"i": 2}]
    inputs = [x for batch, _ in ev.processed for x in batch]
    assert inputs == [{"image_id": f"id{i}"} for i in range(5)]
    assert [o for _, outs in ev.processed for o in outs] == [{"i": i} for i in range(5)]
    assert evaluate(Predictor(), Reader(3), Evaluator())[1] == []  # keep=0 by default
    assert (
        Predictor().batches == []
        and evaluate(p := Predictor(), Reader(9), Evaluator())
        and p.batches == [8, 1]
    )


def test_evaluate_hands_segmentation_masks():
    ev = Evaluator()
    evaluate(Predictor("segmentation"), Reader(2), ev, batch=4)
    ((inputs, _),) = ev.processed
    assert [x["image_id"] for x in inputs] == ["id0", "id1"]
    assert np.array_equal(inputs[1]["mask"], np.full((2, 2), 1))


# ---- vision.engine.train --------------------------------------------------------------------


def test_finetune_config_resets_resume_and_distillation():
    recipe = {
        "task": "detection",
        "data": "d.yaml",
        "model": "fcos_r18",
        "out": "o",
        "epochs": 7,
        "resume": "last.pt",
        "stop_after": 2,
        "teacher": "t.pt",
        "kd_weight": 3.0,
        "warmup_iters": 500,
        "unknown_key": 1,
    }
    cfg = finetune_config(recipe, epochs=2, out="ft")
    defaults = validate({"task": "detection", "data": "d", "model": "fcos_r18", "out": "o"})
    assert (cfg.epochs, cfg.out, cfg.resume, cfg.stop_after) == (2, "ft", None, None)
    assert cfg.teacher == defaults.teacher and cfg.kd_weight == defaults.kd_weight
    assert cfg.warmup_iters == 20 and cfg.data == "d.yaml"
    assert finetune_config({**recipe, "warmup_iters": 5}).warmup_iters == 5
    assert (
        finetune_config({k: v for k, v in recipe.items() if k != "warmup_iters"}).warmup_iters == 0
    )
    with pytest.raises(Exception, match="^fine-tuning recipe: key 'epochs'"):
        finetune_config(recipe, epochs=0)


def test_backbone_parameters():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(1, 2), nn.Linear(2, 2), nn.Linear(2, 1)

        def backbone_modules(self):
            return [self.a, self.b]

    m = M()
    got = backbone_parameters(m)
    assert [id(p) for p in got] == [id(p) for p in [*m.a.parameters(), *m.b.parameters()]]


def test_evaluate_shows_a_progress_bar_that_it_clears(capsys):
    seen = []
    evaluate(Predictor(), Reader(3), Evaluator(), batch=1, observe=lambda s, o: seen.append(o))
    err = capsys.readouterr().err
    assert err.startswith("\rvalidate:") and "0/3" in err  # on the first rank: shown...
    assert err.endswith("\r") and "3/3" not in err  # ...and cleared (leave=False)
    assert seen == [[{"i": 0}], [{"i": 1}], [{"i": 2}]]  # observe sees the outputs
