#!/usr/bin/env bash
# Write constraints.txt: the exact versions of every package the project's .venv holds, which
# `bash run.sh` installs with (-c constraints.txt), so CI and every session train and score with
# the versions the recorded figures were measured with (a new Pillow, say, re-encodes the
# built-in dataset's JPEGs and moves the default models' metrics in the 4th digit). torch,
# torchvision and their CUDA libraries are left to pyproject.toml's own pins.
#   bash dev/lock.sh        (after installing or upgrading what the project needs into .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# Written by dev/lock.sh from the project's .venv ($(date +%F)); read by run.sh."
    .venv/bin/python -m pip freeze --exclude-editable 2>/dev/null \
        | grep -viE '^(vision-suite|torch|torchvision|triton|pip|setuptools)==|^nvidia-' \
        | sort -f
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
