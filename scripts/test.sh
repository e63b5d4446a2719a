#!/usr/bin/env bash
# The project's test command (the README's, and what .ci/run runs): system tools, the venv, lint, pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k conda -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=""
command -v tini >/dev/null || need="$need tini"
command -v shellcheck >/dev/null || need="$need shellcheck"
command -v unshare >/dev/null || need="$need util-linux"
# The container tests (tests/container): podman with runc (crun fails on these machines' cgroups), and
# mmdebstrap for their Debian base image. They skip, saying why, where podman cannot run a container.
optional=""
command -v podman >/dev/null || optional="$optional podman"
command -v runc >/dev/null || optional="$optional runc"
command -v mmdebstrap >/dev/null || optional="$optional mmdebstrap"
# podman kube play builds its pause image around catatonit; podman's Recommends (catatonit | tini | dumb-init) is
# met by tini here, so apt would never bring catatonit by itself.
command -v catatonit >/dev/null || optional="$optional catatonit"
# A real Prometheus server scrapes the metrics endpoint in tests/watch/test_prometheus.py.
command -v prometheus >/dev/null || optional="$optional prometheus"
if [ "$(id -u)" = 0 ]; then
    need="$need$optional"
elif [ -n "$optional" ]; then
    echo "scripts/test.sh: missing:$optional: the container and Prometheus tests will skip (install them, or run as root)" >&2
fi
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "scripts/test.sh: missing:$need (install them with apt-get, or run as root)" >&2
        exit 1
    fi
    apt-get update -qq
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# Not editable: the tests run the installed `heygem-launch`, as a user gets it (package data included).
# setuptools builds in ./build and never empties build/lib: modules deleted since an earlier build would be
# installed again.
rm -rf build
.venv/bin/python -m pip install -q --disable-pip-version-check '.[gpu,test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The layers (pyproject.toml's import-linter contract) and rooms of one sitting (README: Design).
.venv/bin/lint-imports --no-cache
.venv/bin/python scripts/check_sizes.py launcher
shellcheck entrypoint.sh scripts/*.sh
.venv/bin/hadolint docker/Dockerfile tests/container/Containerfile.testbase
exec .venv/bin/python -m pytest "$@"
