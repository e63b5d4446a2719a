"""The container tests' images, built for real with podman and cached between runs.

1. `localhost/heygem-test-debian`: Debian bookworm from mmdebstrap (python3, venv, tini), imported with
   `podman import`; its tarball is kept under the cache folder.
2. `localhost/heygem-test-base`: a stand-in HeyGem image (tests/container/Containerfile.testbase): a conda-like
   env with onnxruntime-gpu 1.16 and numpy from a host-made wheelhouse, and the HeyGem-like app as app.py.
3. `localhost/heygem-launch-test`: docker/Dockerfile's launcher layer over 2, built by scripts/build-image.sh.
4. `localhost/heygem-test-genvideo-base`: a stand-in of HeyGem.ai's gen-video image over 1
   (tests/container/Containerfile.genvideo-base: /code/app_local.py, /usr/local/python3), and
   `localhost/heygem-launch-genvideo-test`, the launcher layer over it with README's recipe (build args).

Each image's tag is a hash of its inputs (the image below it included), so a change anywhere rebuilds what
depends on it and nothing else; an unchanged input costs one `podman image exists`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("HEYGEM_CONTAINER_CACHE", Path.home() / ".cache" / "heygem-launch-tests" / "container"))
# What the field runs (FIELD.md section 2): onnxruntime-gpu 1.16 (CUDA 11), numpy 1.x; cp311 is bookworm's Python.
WHEELS = ("onnxruntime-gpu==1.16.3", "numpy==1.26.4")
WHEEL_TARGET = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
DEBIAN_RECIPE = ("--variant=minbase", "--include=python3,python3-venv,tini", "bookworm")
# Launcher layer inputs: what scripts/build-image.sh puts in the image (README.md only feeds the wheel's metadata).
LAUNCHER_INPUTS = ("docker/Dockerfile", "entrypoint.sh", "scripts/build-image.sh", "pyproject.toml", "launcher")


def podman_env() -> dict[str, str]:
    """This process's environment, with the tests' containers.conf unless the caller chose one."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(HERE / "containers.conf"))}


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _files_digest(paths: tuple[str, ...]) -> str:
    parts: list[bytes | str] = []
    for name in paths:
        path = REPO / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" not in file.parts:
                parts += [str(file.relative_to(REPO)), file.read_bytes()]
    return _digest(*parts)


def image_id(ref: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def _forget_other_tags(repository: str, keep: str) -> None:
    """Builds of one image older than a day, so the cache does not grow with every change. Younger ones may
    belong to a test session running beside this one (another checkout); images in use are left alone."""
    filters = ["--filter", f"reference={repository}", "--filter", "until=24h"]
    listed = podman("images", "--noheading", *filters, "--format", "{{.Repository}}:{{.Tag}}")
    for ref in listed.stdout.split():
        if ref != keep:
            podman("rmi", ref, check=False)


def debian_image() -> str:
    key = _digest("mmdebstrap", *DEBIAN_RECIPE)
    ref = f"localhost/heygem-test-debian:{key}"
    if exists(ref):
        return ref
    tarball = CACHE / f"debian-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = CACHE / f"debian-{key}.{os.getpid()}.tar"  # mmdebstrap picks the format from the name
        subprocess.run(["mmdebstrap", "--quiet", *DEBIAN_RECIPE, str(partial)], check=True, timeout=900)
        partial.rename(tarball)
    podman("import", "--quiet", str(tarball), ref)
    return ref


def wheelhouse() -> Path:
    """onnxruntime-gpu 1.16 and numpy for the image's Python, downloaded once on the host."""
    folder = CACHE / f"wheels-{_digest(*WHEELS, *WHEEL_TARGET, *WHEEL_PLATFORMS)}"
    if not folder.is_dir():
        # Into a folder of our own, then renamed: a session beside this one never sees half a wheelhouse.
        partial = Path(f"{folder}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += ["--only-binary=:all:", *WHEEL_TARGET, *platforms, "--dest", str(partial), *WHEELS]
        subprocess.run(cmd, check=True, timeout=900)
        try:
            partial.rename(folder)
        except OSError:  # another session finished first
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def base_image() -> str:
    return _stand_in_base("heygem-test-base", "Containerfile.testbase", "heygem_like_app.py", "app.py")


def genvideo_base_image() -> str:
    return _stand_in_base(
        "heygem-test-genvideo-base", "Containerfile.genvideo-base", "gen_video_like_app.py", "app_local.py"
    )


def _stand_in_base(name: str, recipe: str, app_file: str, app_name: str) -> str:
    debian = debian_image()
    containerfile = HERE / recipe
    app = REPO / "tests" / app_file
    key = _digest(image_id(debian), containerfile.read_bytes(), app.read_bytes(), *WHEELS)
    ref = f"localhost/{name}:{key}"
    if exists(ref):
        return ref
    wheels = wheelhouse()
    with tempfile.TemporaryDirectory(prefix="heygem-testbase-") as tmp:
        context = Path(tmp)
        (context / "wheels").mkdir()
        for wheel in wheels.glob("*.whl"):
            try:
                os.link(wheel, context / "wheels" / wheel.name)  # no 180 MB copy where the cache is on /tmp's disk
            except OSError:
                shutil.copy(wheel, context / "wheels" / wheel.name)
        shutil.copy(app, context / app_name)
        podman(
            "build",
            "--format",
            "docker",
            "--file",
            str(containerfile),
            "--build-arg",
            f"DEBIAN_IMAGE={debian}",
            "--tag",
            ref,
            str(context),
        )
    _forget_other_tags(f"localhost/{name}", ref)
    return ref


# README's recipe for HeyGem.ai's image: its Python is a plain prefix, its app dir /code.
GENVIDEO_BUILD_ARGS = ("--build-arg", "HEYGEM_CONDA_ENV=/usr/local/python3", "--build-arg", "HEYGEM_APP_DIR=/code")


def launcher_image() -> str:
    """docker/Dockerfile's launcher layer over the stand-in, built the way users build it."""
    return _launcher_over(base_image(), "heygem-launch-test", ())


def genvideo_launcher_image() -> str:
    """The launcher layer over the gen-video stand-in, with README's recipe."""
    return _launcher_over(genvideo_base_image(), "heygem-launch-genvideo-test", GENVIDEO_BUILD_ARGS)


def _launcher_over(base: str, name: str, build_args: tuple[str, ...]) -> str:
    key = _digest(image_id(base), _files_digest(LAUNCHER_INPUTS), *build_args)
    ref = f"localhost/{name}:{key}"
    if exists(ref):
        return ref
    result = subprocess.run(
        [str(REPO / "scripts" / "build-image.sh"), base, ref, "--label", f"heygem.test.inputs={key}", *build_args],
        # podman's own configuration, as a user on a stock Debian has it (no unqualified-search registries, its
        # default ulimits): the build must need nothing of the tests' containers.conf, which only `run` needs here.
        env={**os.environ, "PYTHON": sys.executable, "HEYGEM_BUILD_ENGINE": "podman"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-image.sh exited {result.returncode}: {result.stderr[-3000:]}")
    _forget_other_tags(f"localhost/{name}", ref)
    return ref
