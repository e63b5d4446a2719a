#!/usr/bin/env bash
# Build the HeyGem image with heygem-launch as its entrypoint, from docker/Dockerfile.
#
#   scripts/build-image.sh BASE_IMAGE TAG [BUILD OPTIONS...]
#
# BASE_IMAGE `heygem` builds HeyGem-Linux-Python-Hack itself (the Dockerfile's heygem stage: needs GitHub,
# conda-forge, PyPI and PyTorch's index) with the launcher over it; any other name is an existing HeyGem image
# (the app and its conda env) that gets the launcher layer. Further arguments go to the build as they are,
# e.g. --build-arg HEYGEM_CONDA_ENV=myenv, --label key=value, --network host.
#
# The launcher and its dependencies are built here into a wheelhouse (pip wheel; PYTHON names the interpreter,
# default python3) and installed in the image with --no-index, so that layer needs no network. The engine is
# podman when it is installed, else docker; HEYGEM_BUILD_ENGINE=docker|podman chooses.
set -euo pipefail

if [ "$#" -lt 2 ] || [ -z "$1" ] || [ -z "$2" ]; then
    echo "usage: scripts/build-image.sh BASE_IMAGE TAG [BUILD OPTIONS...]  (BASE_IMAGE 'heygem' builds HeyGem too)" >&2
    exit 64
fi
base=$1
tag=$2
shift 2

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

engine=${HEYGEM_BUILD_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then
        engine=podman
    elif command -v docker >/dev/null; then
        engine=docker
    else
        echo "scripts/build-image.sh: neither podman nor docker is installed" >&2
        exit 69
    fi
fi

# A fresh context holding only what the Dockerfile copies: the repo's checkout (.venv, caches) never travels,
# and parallel builds do not share a wheelhouse.
context=$(mktemp -d "${TMPDIR:-/tmp}/heygem-build.XXXXXX")
trap 'rm -rf "$context"' EXIT
# From a copy of the sources: setuptools builds in the tree's build/ and never empties build/lib, so a wheel
# made in a used checkout would carry modules deleted since.
mkdir "$context/src"
tar -C "$repo" --exclude=./build --exclude=./dist --exclude=./.venv --exclude=./.git --exclude='*.egg-info' \
    --exclude='__pycache__' --exclude=./.ruff_cache --exclude=./.pytest_cache -cf - . | tar -C "$context/src" -xf -
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheelhouse" "$context/src"
rm -rf "$context/src"
cp "$repo/entrypoint.sh" "$context/entrypoint.sh"

# podman's default OCI image format drops HEALTHCHECK and SHELL: ask for Docker's.
format=()
if [ "$engine" = podman ]; then
    format=(--format docker)
fi
"$engine" build "${format[@]}" --file "$repo/docker/Dockerfile" --build-arg "BASE_IMAGE=$base" --tag "$tag" "$@" "$context"
