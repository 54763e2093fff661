"""Dataset readers (VOC XML, VOC palette/RGB masks, COCO JSON), the synthetic generator,
augmentation pipelines, health checks and format conversion."""

from vision.data.sample import Sample

__all__ = ["Sample"]
