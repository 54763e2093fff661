"""Training losses with worked values: segmentation cross-entropy and soft Dice, and the
knowledge-distillation losses and ``Distiller`` (``vision.engine.losses``, ``distill``)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from vision.models import build_model


def test_dice_loss_ignores_ignored_pixels_and_is_zero_when_perfect():
    from vision.engine.losses import segmentation_loss, soft_dice

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 16, 16), generator=g)
    target[0, :4] = 255
    perfect = torch.nn.functional.one_hot(target.clamp(0, 4), 5).permute(0, 3, 1, 2) * 40.0
    assert float(soft_dice(perfect, target)) < 1e-3
    noisy = torch.randn(2, 5, 16, 16, generator=g)
    changed = noisy.clone()
    changed[0, :, :4] = 100 * torch.randn(5, 4, 16, generator=g)  # only ignored pixels
    a, b = (
        segmentation_loss(noisy, target, "ce+dice"),
        segmentation_loss(changed, target, "ce+dice"),
    )
    assert float(a) > 1.0 and torch.allclose(a, b)
    with pytest.raises(ValueError, match="expected one of"):
        segmentation_loss(noisy, target, "focal")


@pytest.mark.parametrize("mode", ["pixel", "channel"])
def test_kd_losses_zero_when_equal_positive_otherwise(mode):
    from vision.engine.distill import binary_kd, channel_kd, pearson_mse, pixel_kd

    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 8, 8), torch.randn(2, 5, 8, 8)
    kd = pixel_kd if mode == "pixel" else channel_kd
    assert kd(a, a.clone(), 2.0).abs() < 1e-6 and kd(a, b, 2.0) > 0.01
    assert binary_kd(a, a.clone(), 2.0).abs() < 1e-6 and binary_kd(a, b, 2.0) > 0.01
    assert pearson_mse(a, 3 * a + 1) < 1e-6 and pearson_mse(a, b) > 0.1  # scale-free


KL_3_1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL([.75, .25] ‖ [.5, .5])


def test_kd_losses_equal_their_worked_values():
    """Teacher logits (ln 3, 0) against a uniform student: KL([3/4, 1/4] ‖ [1/2, 1/2]) at
    T = 1; at T = 2 the teacher is sqrt(3):1 and the loss is scaled by T²."""
    from vision.engine.distill import binary_kd, channel_kd, pearson_mse, pixel_kd

    s, t = torch.zeros(1, 2, 1, 1), torch.tensor([math.log(3), 0.0]).view(1, 2, 1, 1)
    assert pixel_kd(s, t, 1.0).item() == pytest.approx(KL_3_1, rel=1e-6)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl2 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    assert pixel_kd(s, t, 2.0).item() == pytest.approx(4 * kl2, rel=1e-6)
    # two pixels, the second void: only the first counts; none valid: 0 that backpropagates
    s2 = torch.zeros(1, 2, 1, 2, requires_grad=True)
    t2 = torch.tensor([[math.log(3), 9.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    valid = torch.tensor([[[True, False]]])
    assert pixel_kd(s2, t2, 1.0, valid).item() == pytest.approx(KL_3_1, rel=1e-6)
    none = pixel_kd(s2, t2, 1.0, torch.zeros(1, 1, 2, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and s2.grad is not None
    # channel-wise: the same distribution, over the two positions of one channel
    assert channel_kd(s.view(1, 1, 1, 2), t.view(1, 1, 1, 2), 1.0).item() == pytest.approx(
        KL_3_1, rel=1e-6
    )
    assert binary_kd(torch.zeros(1), torch.tensor([math.log(3)]), 1.0).item() == pytest.approx(
        KL_3_1, rel=1e-6
    )
    assert binary_kd(torch.zeros(1), torch.tensor([math.log(3)]), 2.0).item() == pytest.approx(
        4 * kl2, rel=1e-6
    )
    # standardized 0..3 against 3..0: (2z)² on average, z² averaging (n - 1) / n = 3/4
    a = torch.arange(4.0).view(1, 1, 2, 2)
    assert pearson_mse(a, a.flip(-1).flip(-2)).item() == pytest.approx(3.0, rel=1e-5)


def test_focal_kd_is_the_gap_weighted_kl_over_the_teachers_foreground():
    """Four positions, one class, teacher ln 3 (p = 3/4) against a uniform student: each KL is
    KL_3_1, weighted by (1/2 - 3/4)² = 1/16; the teacher's foreground is 4 x 3/4 = 3."""
    from vision.engine.distill import focal_kd

    s, t = torch.zeros(1, 4, 1), torch.full((1, 4, 1), math.log(3))
    assert focal_kd(s, t, 1.0).item() == pytest.approx(4 * KL_3_1 / 16 / 3, rel=1e-5)
    assert focal_kd(t.clone(), t, 1.0).abs() < 1e-9
    # agreeing background positions add nothing to the sum, though they add to the foreground
    bg = torch.full((1, 4, 1), -9.0)
    both = focal_kd(torch.cat([s, bg], 1), torch.cat([t, bg], 1), 1.0).item()
    fg = 3 + 4 * torch.sigmoid(torch.tensor(-9.0)).item()
    assert both == pytest.approx(4 * KL_3_1 / 16 / fg, rel=1e-5)
    # one weak position: the foreground is clamped at 1, not 1/4
    weak = focal_kd(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1) - math.log(3), 1.0).item()
    assert weak == pytest.approx(KL_3_1 / 16, rel=1e-5)


def test_box_kd_weights_positions_by_the_teachers_foreground():
    """Four positions weighted 1, 1, 0, 0: the student off by 1 on each side at the first and
    the third (L1 4 and 4, weighted 4 and 0) over a weight of 2; centerness teacher ln 3 against
    0 at every position: KL_3_1 on the weighted average."""
    from vision.engine.distill import box_kd

    t_box, t_ctr = torch.zeros(1, 4, 4), torch.full((1, 4, 1), math.log(3))
    s_box = t_box.clone()
    s_box[0, [0, 2]] += 1.0
    w = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert box_kd([s_box], [t_box], w).item() == pytest.approx(2.0)
    both = box_kd([s_box, torch.zeros(1, 4, 1)], [t_box, t_ctr], w).item()
    assert both == pytest.approx(2.0 + KL_3_1, rel=1e-5)
    assert box_kd([t_box, t_ctr.clone()], [t_box, t_ctr], w).abs() < 1e-7
    assert box_kd([s_box], [t_box], w / 4).item() == pytest.approx(1.0)  # 1/2 of weight: 1


def test_distiller_losses_modes_and_refusals():
    from vision.engine.distill import (
        Distiller,
        _fpn_width,
        box_kd,
        channel_kd,
        focal_kd,
        pixel_kd,
    )

    torch.manual_seed(0)
    s, te = build_model("fcn8s_slim", 3, input_size=64), build_model("fcn8s_slim", 3, input_size=64)
    x = torch.rand(2, 3, 64, 64)
    targets = torch.zeros(2, 64, 64, dtype=torch.long)
    targets[:, :32] = 255
    out = s(x)
    with torch.no_grad():
        t_out = te.eval()(x)
    d = Distiller(s, te, weight=3.0, temperature=2.0)
    want = 3.0 * pixel_kd(out, t_out, 2.0, targets != 255)
    assert d(x, targets, out).item() == pytest.approx(want.item(), rel=1e-6)
    assert d(x, targets, out).item() != pytest.approx(3.0 * pixel_kd(out, t_out, 2.0).item())
    assert d(x, None, out).item() == pytest.approx(3.0 * pixel_kd(out, t_out, 2.0).item())
    ch = Distiller(s, te, weight=0.5, temperature=4.0, mode="channel")
    assert ch(x, targets, out).item() == pytest.approx(0.5 * channel_kd(out, t_out, 4.0).item())
    both = Distiller(s, te, weight=0.5, temperature=4.0, mode="channel+pixel")
    sum_ = channel_kd(out, t_out, 4.0) + pixel_kd(out, t_out, 4.0, targets != 255)
    assert both(x, targets, out).item() == pytest.approx(0.5 * sum_.item(), rel=1e-6)
    assert all(not p.requires_grad for p in te.parameters()) and not te.training
    with pytest.raises(ValueError, match="expected one of"):
        Distiller(s, te, mode="feature")
    det = build_model("fcos_slim", 3, input_size=64, fpn_width=32)
    with pytest.raises(ValueError, match="teacher: expected a segmentation model"):
        Distiller(s, det)
    det.train()
    assert _fpn_width(det) == 32 and det.training  # read by a forward pass, mode restored
    twin = build_model("fcos_slim", 3, input_size=64, fpn_width=32)
    twin.load_state_dict(det.state_dict())
    same = Distiller(det, twin, weight=2.0)
    assert same.adapter is None
    det.eval()  # batch statistics would make the twins differ
    with torch.no_grad():
        det(x)  # the hooks keep the student's features and logits
    assert same(x).item() == pytest.approx(0.0, abs=1e-5)  # identical nets: nothing to learn
    twin.net.head.classification_head.cls_logits.bias.data += 1.0
    half = Distiller(det, twin, weight=1.0)
    with torch.no_grad():
        det(x)  # both distillers' hooks see this pass
        one, other = same(x).item(), half(x).item()
    assert one > 0.01 and other == pytest.approx(one / 2, rel=1e-5)
    focal = Distiller(det, twin, logit_loss="focal")
    with torch.no_grad():
        det(x)
        t_cls = focal.teacher_outputs(x)[-1]
        want = focal_kd(focal._seen["cls"], t_cls, 2.0).item()
        assert focal(x).item() == pytest.approx(want, rel=1e-5) and want > 1e-4
    assert "focal logit KD" in focal.describe()
    for bad, net in (("soft", det), ("focal", s)):  # no such loss; a segmenter has no class logits
        with pytest.raises(ValueError, match="KD logit loss: expected one of"):
            Distiller(net, twin if net is det else te, logit_loss=bad)
    boxes = Distiller(det, twin, box_weight=0.5)
    with torch.no_grad():
        det(x)
        s_box, t_out = boxes._seen["box"], boxes.teacher_outputs(x)
        fg = torch.sigmoid(t_out[-3]).amax(-1)
        got, no_box = boxes(x).item(), half(x).item()  # half: the same teacher, no boxes
        assert len(s_box) == 2 and box_kd(s_box, t_out[-2:], fg).abs() < 1e-6  # same box heads
    assert got == pytest.approx(no_box, rel=1e-5) and "box imitation x0.5" in boxes.describe()
    twin.net.head.regression_head.bbox_reg.bias.data += 0.5
    with torch.no_grad():
        det(x)
        t_out = boxes.teacher_outputs(x)
        extra = box_kd(boxes._seen["box"], t_out[-2:], torch.sigmoid(t_out[-3]).amax(-1)).item()
        assert boxes(x).item() == pytest.approx(no_box + 0.5 * extra, rel=1e-5) and extra > 0.1
    for bad, net in ((-1.0, det), (1.0, s)):  # negative; a segmenter has no boxes
        with pytest.raises(ValueError, match="KD box weight: expected 0"):
            Distiller(net, twin if net is det else te, box_weight=bad)
    wide = Distiller(build_model("fcos_slim", 3, input_size=64), build_model("fcos_slim", 3,
                     input_size=64, fpn_width=32))  # fmt: skip
    assert (wide.adapter.in_channels, wide.adapter.out_channels) == (64, 32)


def test_kd_scale_falls_from_one_to_zero_and_scales_the_loss():
    from vision.engine.distill import Distiller, kd_scale

    assert [kd_scale("none", e, 4) for e in range(4)] == [1.0] * 4
    assert [kd_scale("linear", e, 4) for e in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cos = [kd_scale("cosine", e, 4) for e in range(5)]
    assert cos == pytest.approx([1.0, 0.5 + 0.5 * math.sqrt(0.5), 0.5, 0.5 - 0.5 * math.sqrt(0.5),
                                 0.0])  # fmt: skip
    assert kd_scale("linear", 7, 4) == 0.0 and kd_scale("cosine", 0, 0) == 1.0
    with pytest.raises(ValueError, match=r"KD decay: expected one of \('none', 'linear', "):
        kd_scale("exp", 0, 4)
    torch.manual_seed(0)
    s, te = build_model("fcn8s_slim", 3, input_size=64), build_model("fcn8s_slim", 3, input_size=64)
    x = torch.rand(2, 3, 64, 64)
    out = s(x)
    d = Distiller(s, te, weight=2.0, mode="channel")
    assert d.scale == 1.0
    full = d(x, None, out).item()
    d.scale = 0.25
    assert d(x, None, out).item() == pytest.approx(full / 4, rel=1e-6) and full > 0


def test_kd_stride_pools_both_maps_before_the_loss():
    """``stride``: student and teacher logits average-pooled first; the teacher's pass (what a
    cache stores) is already pooled; in pixel mode a pooled position counts when most of its
    pixels are valid."""
    from vision.engine.distill import Distiller, channel_kd, pixel_kd

    torch.manual_seed(0)
    s, te = build_model("fcn8s_slim", 3, input_size=64), build_model("fcn8s_slim", 3, input_size=64)
    x = torch.rand(2, 3, 64, 64)
    out = s(x)
    d = Distiller(s, te, weight=2.0, temperature=4.0, mode="channel", stride=4)
    t_out = d.teacher_outputs(x)[0]
    with torch.no_grad():
        full = te(x)
    torch.testing.assert_close(t_out, torch.nn.functional.avg_pool2d(full, 4))
    pooled = 2.0 * channel_kd(torch.nn.functional.avg_pool2d(out, 4), t_out, 4.0)
    assert d(x, None, out).item() == pytest.approx(pooled.item(), rel=1e-6)
    assert pooled.item() != pytest.approx(2.0 * channel_kd(out, full, 4.0).item(), rel=1e-2)
    assert d(x, None, out, [t_out]).item() == pytest.approx(pooled.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"KD \(stride 4\) needs logits of one shape"):
        d(x, None, out, [full])  # a cache made without the stride
    # pixel mode, stride 2 on a 2 x 4 map: the left block is 3/4 void (left out), the right
    # block 1/4 void (counted, its logits averaged to (ln 3, 0) against a uniform student)
    px = Distiller(s, te, temperature=1.0, stride=2)
    student = torch.zeros(1, 2, 2, 4)
    teacher = torch.tensor([[9.0] * 2 + [2 * math.log(3), 0.0]] * 2)  # class 0, (2, 4)
    teacher = torch.stack([teacher, torch.zeros(2, 4)])[None]  # class 1: 0 everywhere
    target = torch.tensor([[255, 255, 255, 0], [255, 0, 1, 1]])[None]
    cached = [torch.nn.functional.avg_pool2d(teacher, 2)]
    assert px(student, target, student, cached).item() == pytest.approx(KL_3_1, rel=1e-6)
    both = pixel_kd(torch.zeros(1, 2, 1, 2), cached[0], 1.0)  # void ignored: the mean of both
    assert px(student, None, student, cached).item() == pytest.approx(both.item(), rel=1e-6)
    for bad, model in ((0, s), (2, build_model("fcos_slim", 3, input_size=64))):
        with pytest.raises(ValueError, match=f"KD stride: expected 1, or > 1 for a segmenter, "
                           f"got {bad}"):  # fmt: skip
            Distiller(model, model, stride=bad)


def test_soft_dice_and_segmentation_loss_worked_values():
    """Pixel 1: probabilities (1/2, 1/2, 0), class 0; pixel 2: (3/4, 1/4, 0), class 1; a void
    pixel counts for nothing; class 2 is in no label and is left out of the mean.
    Dice (eps 1): class 0 (2 * 1/2 + 1) / (5/4 + 1 + 1), class 1 (2 * 1/4 + 1) / (3/4 + 1 + 1)."""
    from vision.engine.losses import segmentation_loss, soft_dice

    logits = torch.tensor([[0.0, math.log(3), 5.0], [0.0, 0.0, -5.0], [-100.0, -100.0, 0.0]])
    logits = logits.view(1, 3, 1, 3).requires_grad_(True)
    target = torch.tensor([[[0, 1, 255]]])
    d0, d1 = 2 / 3.25, 1.5 / 2.75
    assert soft_dice(logits, target).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    assert soft_dice(logits, target, eps=0.0).item() == pytest.approx(
        1 - (1 / 2.25 + 0.5 / 1.75) / 2, rel=1e-6
    )
    ce = (math.log(2) + math.log(4)) / 2
    assert segmentation_loss(logits, target).item() == pytest.approx(ce, rel=1e-6)
    both = segmentation_loss(logits, target, "ce+dice")
    assert both.item() == pytest.approx(ce + 1 - (d0 + d1) / 2, rel=1e-6)
    void = soft_dice(logits, torch.full((1, 1, 3), 255))
    void.backward()
    assert void.item() == 0.0 and logits.grad is not None
    with pytest.raises(ValueError, match=r"unknown segmentation loss 'dice': expected one of"):
        segmentation_loss(logits, target, "dice")


def test_soft_dice_counts_classes_by_the_logits_not_the_labels():
    """Two classes of logits, labels only of class 0: class 1 is absent and left out, and the
    one-hot has the logits' two channels (not one, from the largest label)."""
    from vision.engine.losses import soft_dice

    logits = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]]).view(1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    # class 0: probabilities 1/2 and 3/4 on its two pixels
    want = 1 - (2 * 1.25 + 1) / (1.25 + 2 + 1)
    assert soft_dice(logits, target).item() == pytest.approx(want, rel=1e-6)


def test_distiller_refuses_outputs_it_cannot_compare_with_both_shapes():
    from vision.engine.distill import Distiller

    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    seg = build_model("fcn8s_slim", 3, input_size=64)
    d = Distiller(seg, build_model("fcn8s_slim", 5, input_size=64))
    with pytest.raises(ValueError) as e:
        d(x, None, seg(x))
    assert str(e.value) == (
        "KD needs logits of one shape: student (2, 4, 64, 64), teacher (2, 6, 64, 64)"
    )
    det = build_model("fcos_slim", 3, input_size=64, fpn_width=32).eval()
    dd = Distiller(det, build_model("fcos_slim", 4, input_size=64, fpn_width=32))
    with torch.no_grad():
        det(x)
        with pytest.raises(ValueError) as e:
            dd(x)
    # (batch, anchors, classes) of each
    assert re.fullmatch(
        r"KD needs the same FPN levels and classes: student \(2, (\d+), 3\), teacher \(2, \1, 4\)",
        str(e.value),
    ), str(e.value)


def test_kd_losses_reduce_over_the_right_dimensions():
    """Channel KD averages (not sums) over channels and scales by T²; PKD standardizes each
    channel over batch and positions (a per-channel affine change costs nothing), with its
    epsilon added to the deviation; pixel KD with no valid pixel is exactly 0."""
    from vision.engine.distill import channel_kd, pearson_mse, pixel_kd

    s = torch.zeros(1, 2, 1, 2)
    t = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # KL_3_1 and 0
    assert channel_kd(s, t, 1.0).item() == pytest.approx(KL_3_1 / 2, rel=1e-6)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl2 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    assert channel_kd(s, t, 2.0).item() == pytest.approx(4 * kl2 / 2, rel=1e-6)
    torch.manual_seed(0)
    te = torch.randn(2, 2, 4, 4)
    st = te.clone()
    st[:, 1] = 10 * te[:, 1] + 5
    assert pearson_mse(st, te).item() < 1e-8
    st[1] = st[1] * 3  # the second image's features scaled: not one affine map per channel
    assert pearson_mse(st, te).item() > 0.01
    tiny = 1e-5 * torch.arange(4.0, dtype=torch.float64).view(1, 1, 2, 2)  # std ~ 1.3e-5
    want = 1.25e-10 / (math.sqrt(5 / 3) * 1e-5 + 1e-6) ** 2  # mean squared deviation / (s+eps)²
    assert pearson_mse(tiny, torch.zeros_like(tiny)).item() == pytest.approx(want, rel=1e-9)
    none = pixel_kd(torch.ones(1, 2, 1, 2), t, 1.0, torch.zeros(1, 1, 2, dtype=torch.bool))
    assert none.item() == 0.0


def test_detection_distiller_defaults_adapter_and_its_worked_loss():
    """Defaults weight 1, T = 2; the loss is weight x (mean over FPN levels of PKD + binary KD
    on the class logits), read from the student's own forward pass; a width-changing 1x1
    adapter makes different widths comparable."""
    from vision.engine.distill import Distiller, binary_kd, pearson_mse

    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    student = build_model("fcos_slim", 3, input_size=64, fpn_width=32).eval()
    teacher = build_model("fcos_slim", 3, input_size=64, fpn_width=32)
    d = Distiller(student, teacher)
    assert (d.weight, d.t, d.mode) == (1.0, 2.0, "pixel")

    def parts(net):
        f = list(net.backbone(net.transform(list(x))[0].tensors).values())
        return f, net.head.classification_head(f)

    weighted = Distiller(student, teacher, weight=1.5)
    with torch.no_grad():
        student(x)
        got = weighted(x).item()
        (sf, sc), (tf, tc) = parts(student.net), parts(teacher.net)
    levels = sum(pearson_mse(a, b) for a, b in zip(sf, tf, strict=True)) / len(sf)
    assert got == pytest.approx(1.5 * (levels + binary_kd(sc, tc, 2.0)).item(), rel=1e-5)
    assert levels.item() > 0.1  # the feature term is really there
    wide_student = build_model("fcos_slim", 3, input_size=64).eval()  # FPN width 64
    wide = Distiller(wide_student, teacher)
    assert wide.adapter.kernel_size == (1, 1)
    with torch.no_grad():
        wide_student(x)
        loss = wide(x)
    assert torch.isfinite(loss) and loss.item() > 0.1
