#!/usr/bin/env bash
# Runs every quality gate and the whole test suite, installing what they need first. This is the
# gate CI runs; plain `pytest` is the developer's quicker loop (docs/development.md).
#   tests/run.sh            lint, format check, mypy --strict, then every test (all markers)
#   tests/run.sh -k rules   extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# The locked versions, each checked against its hashes (docs/development.md: how to update the
# lock), then the package itself, editable, without resolving anything more. uv installs them: in
# a few seconds, where pip takes half a minute on two cores. uv itself is one of the lock's
# entries, which pip installs first, checked against its hashes like the rest. Bytecode is
# compiled at install time, as pip does, so that no process compiles a dependency again.
if [ ! -x .venv/bin/uv ]; then
    uv_lock=$(mktemp)
    trap 'rm -f "$uv_lock"' EXIT
    sed -n '/^uv==/,/^ *# via/p' requirements-test.lock >"$uv_lock"
    if ! grep -q '^uv==' "$uv_lock"; then
        echo "requirements-test.lock pins no uv: make the lock again (docs/development.md)" >&2
        exit 1
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$uv_lock"
fi
.venv/bin/uv pip install --quiet --python .venv/bin/python --compile-bytecode \
    --require-hashes --no-deps -r requirements-test.lock
.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
.venv/bin/python -m pip check

# Debian tools the tests start for real: promtool/prometheus (rules, end to end), amtool/
# alertmanager (routing, end to end), chromium (the status page), podman, runc and mmdebstrap (the
# container image), tinyproxy (egress proxies). Each is installed only when missing.
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need promtool prometheus
need prometheus prometheus
need prometheus-alertmanager prometheus-alertmanager
need amtool prometheus-alertmanager
need chromium chromium
need podman podman
need runc runc
need mmdebstrap mmdebstrap
need tinyproxy tinyproxy
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    echo "== apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

echo "== ruff check"
.venv/bin/ruff check .
echo "== ruff format --check"
.venv/bin/ruff format --check .
echo "== mypy --strict exporter/"
.venv/bin/mypy --strict exporter
echo "== pytest"
coverage=()
if [ "$#" -eq 0 ]; then
    # The whole suite also holds the coverage floor (raise it as the code grows).
    coverage=(--cov=exporter --cov-report=term:skip-covered --cov-fail-under=90)
fi
set +e
# -m '' lifts the default marker expression of pyproject's addopts: e2e, container, slow and
# soak tests run too. Workers: four, not one per core as in pyproject's addopts: many long tests
# wait on real servers' scrape, rule and notification intervals, and others use the cores
# meanwhile (docs/development.md has the figures).
.venv/bin/python -m pytest -m '' -n "${GATE_WORKERS:-4}" "${coverage[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: treating as a failure" >&2
    exit 1
fi
exit "$status"
