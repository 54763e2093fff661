"""Every route of the service and what guards it, declared in one place.

The request guard (``service.guard``) applies a route's policy before BentoML parses the
request; a test lists the application's routes and fails when one that takes an upload or runs
a model is missing here or declared without its limits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    upload: bool = False  # a multipart upload, the image a file part: byte and form limits
    model: bool = False  # runs a model: overload refusal, draining at shutdown
    key: bool = False  # needs an API key when keys are configured
    rate: bool = False  # counts against the client's rate limit


INFERENCE = Policy(upload=True, model=True, key=True, rate=True)
ROUTES = {
    "/detect": INFERENCE,
    "/segment": INFERENCE,
    "/info": Policy(key=True, rate=True),
}
# open to all: health (load balancers), the web page (it asks for a key when /info needs one)
OPEN = ("/livez", "/readyz", "/ui", "/metrics")
METRICS_ENV = "VISION_METRICS_PUBLIC"  # 0: /metrics needs a key too (when keys are on)


def policies(env=os.environ) -> dict[str, Policy]:
    """The declared routes, with ``/metrics`` closed when ``VISION_METRICS_PUBLIC=0``."""
    out = dict(ROUTES)
    if env.get(METRICS_ENV, "1") == "0":
        out["/metrics"] = Policy(key=True)
    return out
