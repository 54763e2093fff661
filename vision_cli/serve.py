"""``vision serve``: the REST service (``bentoml serve service.service:VisionService``) on the
promoted models, or on checkpoints given here."""

from __future__ import annotations

import os


def add_commands(sub) -> None:
    s = sub.add_parser("serve", help="serve the promoted models over REST (BentoML)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument(
        "--detector",
        default=None,
        help="a detector checkpoint (or nanodet_coco, COCO-trained) instead of the store's",
    )
    s.add_argument(
        "--segmenter", default=None, help="a segmenter checkpoint instead of the store's"
    )
    s.set_defaults(func=cmd_serve)


def serve(host: str, port: int, env: dict[str, str] | None = None) -> None:
    """Replace this process with the BentoML server (as the main job ends)."""
    from service.launch import serve_argv

    argv = serve_argv(host, port)
    os.execve(argv[0], argv, {**os.environ, **(env or {})})


def cmd_serve(a) -> int:
    from service.launch import CKPT_ENV
    from vision.models.zoo import is_pretrained

    env = {}
    for task, path in (("detection", a.detector), ("segmentation", a.segmenter)):
        if path:  # a model that ships its weights stays a name
            shipped = is_pretrained(path) and not os.path.exists(path)
            env[CKPT_ENV[task]] = path if shipped else os.path.abspath(path)
    serve(a.host, a.port, env)
    return 0
