"""The evaluation suite: IoU, precision/recall, VOC and COCO mAP, mIoU, FPS and reports.

Every evaluator follows one protocol (``reset``, ``process(inputs, outputs)``, ``evaluate()``
returning ``{task: {metric: value}}``); models plug into it, it never re-implements them.
"""
