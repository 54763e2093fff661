"""Segmentation sets listed as ``image label`` pairs, with index label maps (CamVid, SegNet).

A split file has one ``IMAGE LABEL`` pair a line, paths relative to the dataset root (a leading
``/`` is tolerated: upstream lists often carry an absolute prefix whose last two parts are the
folder and file). Label maps are 8-bit index PNGs whose values are class indices directly: with
``background=False`` (CamVid) index ``k`` is class ``names[k]``, with ``background=True`` index
``0`` is background and ``k + 1`` is ``names[k]``. The ``void`` value (CamVid: 11) is read as the
ignore index, so it is neither trained nor scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vision.data.io import check_labels, read_mask
from vision.data.sample import IGNORE_INDEX, Sample, with_image
from vision.errors import DataError, SkipLog, handle


def read_pairs(root: Path, split: str | Path) -> list[tuple[Path, Path, str]]:
    """``(image, label, where)`` for each line of a pairs split file."""
    p = Path(split)
    p = p if p.is_absolute() else Path(root) / p
    if not p.is_file():
        raise DataError(str(p), "a split file of 'image label' lines", "no such file")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{p}:{n}", "two paths, 'image label'", repr(line))
        img, lab = (_local(root, s) for s in parts)
        out.append((img, lab, f"{p}:{n}"))
    return out


def _local(root: Path, s: str) -> Path:
    if not s.startswith("/"):
        return Path(root) / s
    parts = Path(s).parts  # '/SegNet/CamVid/train/x.png' → root/train/x.png
    return Path(root).joinpath(*parts[-2:])


class PairsDataset:
    """A segmentation split of ``image label`` pairs as a sequence of :class:`Sample`.

    Missing files raise (``strict``) or are skipped and counted in ``self.skips``."""

    def __init__(
        self,
        root: Path | str,
        names: list[str],
        split: str | Path,
        void: int | None = None,
        background: bool = False,
        strict: bool = True,
    ):
        self.root, self.names, self.strict = Path(root), list(names), strict
        self.void, self.background, self.task = void, background, "segmentation"
        self.skips = SkipLog()
        self.samples: list[Sample] = []
        for img, lab, where in read_pairs(self.root, split):
            try:
                for f, what in ((img, "image"), (lab, "label map")):
                    if not f.is_file():
                        raise DataError(f"{where} {f}", f"an existing {what} file", "no such file")
            except DataError as err:
                handle(err, strict, self.skips, "missing file")
                continue
            self.samples.append(Sample(image_id=img.stem, path=img, width=0, height=0))
            self.samples[-1].mask_path = lab

    def limit(self, n: int | None) -> PairsDataset:
        """Keep only the first ``n`` samples (all when ``n`` is None)."""
        if n:
            self.samples = self.samples[:n]
        return self

    def semantic_mask(self, i: int) -> np.ndarray:
        """The label map of sample ``i`` with ``void`` read as the ignore index; other values
        past the classes are an error naming the file."""
        path = self.samples[i].mask_path
        m = read_mask(path)
        if self.void is not None:
            m = np.where(m == self.void, np.uint8(IGNORE_INDEX), m)
        return check_labels(m, len(self.names) + self.background, str(path), IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        rec = self.samples[i]
        out = with_image(rec, exif=False)
        out.height, out.width = out.image.shape[:2]
        out.mask = self.semantic_mask(i)
        if out.mask.shape != (out.height, out.width):
            raise DataError(
                str(rec.mask_path),
                f"a label map of the image size {out.width}x{out.height}",
                f"{out.mask.shape[1]}x{out.mask.shape[0]}",
            )
        return out
