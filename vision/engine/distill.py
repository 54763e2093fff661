"""Knowledge distillation: a frozen teacher runs in the same training step as the student.

Segmentation (``mode="pixel"``, Hinton et al., 2015, "Distilling the Knowledge in a Neural
Network"): the KL divergence from the teacher's to the student's per-pixel class distribution
at temperature T, times T², averaged over the pixels that are not padding or void.
``mode="channel"`` (Shu et al., ICCV 2021, "Channel-wise Knowledge Distillation for Dense
Prediction"): for every class channel, a softmax over the spatial positions at temperature T;
the KL from teacher to student, times T², averaged over channels. ``mode="channel+pixel"``:
the sum of both at the same temperature (on CamVid each alone helps other classes, channel-wise
the thin rare ones, pixel-wise cars and pedestrians; the sum was no better over three seeds).

Detection (one-stage torchvision detectors: FCOS, RetinaNet), after PKD (Cao et al.,
NeurIPS 2022, "PKD: General Distillation Framework for Object Detectors via Pearson Correlation
Coefficient"): every FPN level's features of student and teacher are normalized per channel
(zero mean, unit variance) and compared by mean squared error — insensitive to the scale of
either — through a trainable 1x1 adapter when their widths differ; plus KD on the
classification logits: the binary KL between the teacher's and the student's temperature-scaled
sigmoids (these detectors classify with sigmoids), times T², averaged over every logit
(``logit_loss="binary"``); or ``"focal"``: that KL per logit times ``|σ(s/T) − σ(t/T)|²``,
summed and divided by the teacher's soft foreground count, the form of the detector's own
classification loss with the teacher's probabilities as soft targets (the quality focal loss of
Li et al., NeurIPS 2020, "Generalized Focal Loss"): the many background positions where the two
already agree stop outweighing the objects (with a 12-epoch student at T = 2, 88 % of the
averaged binary KL comes from positions the teacher scores below 0.05). ``box_weight`` > 0 adds
box imitation where the teacher sees objects, after localization distillation's "valuable
localization regions" (Zheng et al., CVPR 2022): the L1 distance between the student's and the
teacher's box regressions (FCOS: left/top/right/bottom distances in anchor sizes) and the binary
KL of their centerness, each averaged over the positions weighted by the teacher's highest
class probability.

``stride`` > 1 (segmentation): both maps are average-pooled by ``stride`` before the loss, so
the KD runs on ``stride²`` times fewer positions (a CamVid step at 320 px, batch 8, on 2 CPU
cores: +28 % for the full-resolution loss, +3 % at stride 4), and a cached teacher keeps its
pooled logits only. In pixel mode a pooled position counts when most of its pixels are valid.

Student and teacher may differ in backbone and width; a mismatch that cannot work (other
classes, other output sizes or FPN levels) is an error naming both shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vision.recipe import KD_DECAYS, KD_LOGIT_LOSSES, KD_MODES

MODES, DECAYS, LOGIT_LOSSES = KD_MODES, KD_DECAYS, KD_LOGIT_LOSSES  # the recipe's options


def kd_scale(decay: str, epoch: int, epochs: int) -> float:
    """The KD weight's factor in ``epoch`` (0-based) of ``epochs``: 1 throughout (``none``), or
    falling from 1 towards 0 over the run (``linear``, ``cosine``), so the labels have the last
    word (annealed KD, after Jafari et al., EACL 2021)."""
    if decay not in DECAYS:
        raise ValueError(f"KD decay: expected one of {DECAYS}, got {decay!r}")
    x = min(max(epoch / max(epochs, 1), 0.0), 1.0)
    if decay == "linear":
        return 1.0 - x
    return 0.5 * (1.0 + math.cos(math.pi * x)) if decay == "cosine" else 1.0


def pixel_kd(student: torch.Tensor, teacher: torch.Tensor, t: float, valid=None) -> torch.Tensor:
    """Hinton KD on ``(B, K, H, W)`` logits; ``valid``: ``(B, H, W)`` pixels to count."""
    log_s = F.log_softmax(student / t, dim=1)
    log_t = F.log_softmax(teacher / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)  # (B, H, W)
    if valid is not None:
        kl = kl[valid]
    return kl.mean() * t * t if kl.numel() else student.sum() * 0


def channel_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Channel-wise KD: spatial distributions per ``(B, K)`` channel."""
    s = student.flatten(2) / t
    te = teacher.flatten(2) / t
    log_s, log_t = F.log_softmax(s, dim=2), F.log_softmax(te, dim=2)
    return (log_t.exp() * (log_t - log_s)).sum(2).mean() * t * t


def _sigmoid_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per logit, the KL from the teacher's Bernoulli distribution to the student's."""
    p = torch.sigmoid(teacher)
    return p * (F.logsigmoid(teacher) - F.logsigmoid(student)) + (1 - p) * (
        F.logsigmoid(-teacher) - F.logsigmoid(-student)
    )


def binary_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL between temperature-scaled sigmoids, per logit, averaged."""
    return _sigmoid_kl(student / t, teacher / t).mean() * t * t


def focal_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """``binary_kd``'s KL on ``(B, N, K)`` logits weighted by the squared gap of the two
    probabilities, summed over the logits and divided by the teacher's soft foreground count
    (its highest class probability summed over the ``B x N`` positions, at least 1)."""
    s, te = student / t, teacher / t
    p, q = torch.sigmoid(te), torch.sigmoid(s)
    kl = _sigmoid_kl(s, te)
    foreground = torch.sigmoid(teacher).amax(-1).sum().clamp(min=1.0)
    return (kl * (q - p).pow(2)).sum() / foreground * t * t


def box_kd(
    student: list[torch.Tensor], teacher: list[torch.Tensor], weight: torch.Tensor
) -> torch.Tensor:
    """Box imitation: ``student``/``teacher`` the regression head's outputs, ``[(B, N, 4)
    boxes]`` and, for FCOS, ``(B, N, 1)`` centerness logits; ``weight``: ``(B, N)``."""
    norm = weight.sum().clamp(min=1.0)
    loss = (weight * (student[0] - teacher[0]).abs().sum(-1)).sum() / norm
    if len(student) > 1:
        kl = _sigmoid_kl(student[1][..., 0], teacher[1][..., 0])
        loss = loss + (weight * kl).sum() / norm
    return loss


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple | list) else [out]


def pearson_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE of per-channel standardized ``(B, C, H, W)`` feature maps (PKD)."""

    def standardize(x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        return (x - mean) / (std + 1e-6)

    return F.mse_loss(standardize(student), standardize(teacher))


def _shapes(what: str, student, teacher) -> str:
    return f"{what}: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}"


def _fpn_width(detector: nn.Module) -> int:
    """Channels of the detector's feature maps, read from a forward pass of its ``features``
    tap (pruning changes them without changing the ``out_channels`` attribute)."""
    features = detector.kd_taps()["features"]
    was = features.training
    features.eval()
    size = detector.meta.input_size
    with torch.no_grad():
        x = torch.zeros(1, 3, size, size, device=next(detector.parameters()).device)
        width = next(iter(features(x).values())).shape[1]
    features.train(was)
    return int(width)


class Distiller(nn.Module):
    """The distillation loss of one training step. ``forward(images, targets, outputs)`` is
    called right after the student's forward pass (``outputs``: its logits for segmentation;
    detection reads the student's features and class logits through hooks). The teacher is
    frozen and in eval mode; ``adapters`` (detection, widths differing) are trained with the
    student."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        weight: float = 1.0,
        temperature: float = 2.0,
        mode: str = "pixel",
        stride: int = 1,
        decay: str = "none",
        logit_loss: str = "binary",
        box_weight: float = 0.0,
    ):
        super().__init__()
        task = student.meta.task
        if teacher.meta.task != task:
            raise ValueError(
                f"teacher: expected a {task} model like the student, got a {teacher.meta.task} one"
            )
        if mode not in MODES:
            raise ValueError(f"KD mode: expected one of {MODES}, got {mode!r}")
        if logit_loss not in LOGIT_LOSSES or (logit_loss != "binary" and task != "detection"):
            raise ValueError(
                f"KD logit loss: expected one of {LOGIT_LOSSES} (a detector's class logits), "
                f"got {logit_loss!r} for a {task} model"
            )
        if box_weight < 0 or (box_weight > 0 and task != "detection"):
            raise ValueError(
                f"KD box weight: expected 0, or > 0 for a detector, got {box_weight} for a "
                f"{task} model"
            )
        if stride < 1 or (stride > 1 and task != "segmentation"):
            raise ValueError(
                f"KD stride: expected 1, or > 1 for a segmenter, got {stride} for a {task} model"
            )
        self.task, self.weight, self.t, self.mode = task, weight, temperature, mode
        self.stride, self.decay, self.logit_loss = stride, decay, logit_loss
        self.box_weight = box_weight
        self.scale = kd_scale(decay, 0, 1)  # the weight's factor in this epoch (set_epoch)
        self.teacher = [teacher.eval()]  # a list: not a submodule, never in the optimizer
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.runtime = None  # images -> teacher logits in place of the module (ONNX Runtime)
        self.adapter: nn.Module | None = None
        self._seen: dict[str, object] = {}
        if task == "detection":  # the student's taps: features, class logits, boxes
            taps = student.kd_taps()
            taps["features"].register_forward_hook(lambda m, i, o: self._seen.__setitem__("f", o))
            taps["classes"].register_forward_hook(lambda m, i, o: self._seen.__setitem__("cls", o))
            if box_weight > 0:
                taps["boxes"].register_forward_hook(
                    lambda m, i, o: self._seen.__setitem__("box", _as_list(o))
                )
            ws, wt = _fpn_width(student), _fpn_width(teacher)  # as built, or as pruned
            if ws != wt:
                self.adapter = nn.Conv2d(ws, wt, 1)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """The weight's factor for ``epoch`` (0-based) of ``epochs`` under ``decay``."""
        self.scale = kd_scale(self.decay, epoch, epochs)

    def describe(self) -> str:
        """What is distilled, for the training log: ``channel KD, stride 2, cosine decay``."""
        logit = "focal logit KD" if self.logit_loss == "focal" else "logit KD"
        kind = f"{self.mode} KD" if self.task == "segmentation" else f"PKD features + {logit}"
        kind += f", stride {self.stride}" if self.stride > 1 else ""
        kind += f", box imitation x{self.box_weight:g}" if self.box_weight > 0 else ""
        return kind + (f", {self.decay} decay" if self.decay != "none" else "")

    @torch.no_grad()
    def teacher_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """What the loss reads of the teacher: ``[logits]`` (segmentation) or every FPN
        level's features and the classification logits, ``[*features, class_logits]``, then
        the regression head's outputs when ``box_weight`` > 0."""
        if self.task == "segmentation":
            run = self.runtime or self.teacher[0]
            return [self._pool(run(images))]
        return self.teacher[0].kd_outputs(images, boxes=self.box_weight > 0)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.stride) if self.stride > 1 else x

    def forward(self, images: torch.Tensor, targets=None, outputs=None, cached=None):
        """The weighted KD loss; ``cached``: ``teacher_outputs`` of these images computed
        before training (``soft_labels.py``), in place of the teacher's forward pass."""
        if cached is None:
            cached = self.teacher_outputs(images)
        else:
            device = images.device
            cached = [c.to(device, non_blocking=True) for c in cached]
        if self.task == "segmentation":
            t_logits, s_logits = cached[0], self._pool(outputs.float())
            if t_logits.shape != s_logits.shape:
                at = f" (stride {self.stride})" if self.stride > 1 else ""
                what = f"KD{at} needs logits of one shape"
                raise ValueError(_shapes(what, s_logits, t_logits))
            t_logits, loss = t_logits.float(), 0.0
            if self.mode != "pixel":
                loss = channel_kd(s_logits, t_logits, self.t)
            if self.mode != "channel":
                valid = None
                if targets is not None:
                    valid = self._pool((targets != 255).float()[:, None])[:, 0] > 0.5
                loss = loss + pixel_kd(s_logits, t_logits, self.t, valid)
            return self.weight * self.scale * loss
        s_feats = list(self._seen.pop("f").values())
        s_cls, s_box = self._seen.pop("cls"), self._seen.pop("box", [])
        n = len(cached) - len(s_box)
        t_feats, t_cls, t_box = cached[: n - 1], cached[n - 1], cached[n:]
        if len(s_feats) != len(t_feats) or s_cls.shape != t_cls.shape:
            raise ValueError(_shapes("KD needs the same FPN levels and classes", s_cls, t_cls))
        feat = 0.0
        # equal anchor counts (checked above) and the 1x1 adapter make the levels' shapes equal
        for s, te in zip(s_feats, t_feats, strict=True):
            if self.adapter is not None:
                s = self.adapter(s)
            feat = feat + pearson_mse(s.float(), te.float())
        kd = focal_kd if self.logit_loss == "focal" else binary_kd
        loss = feat / len(s_feats) + kd(s_cls.float(), t_cls.float(), self.t)
        if s_box:
            fg = torch.sigmoid(t_cls.float()).amax(-1)
            s_box, t_box = [b.float() for b in s_box], [b.float() for b in t_box]
            loss = loss + self.box_weight * box_kd(s_box, t_box, fg)
        return self.weight * self.scale * loss
