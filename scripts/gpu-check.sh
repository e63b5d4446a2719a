#!/usr/bin/env bash
# GPU checks: the `gpu` tests plus `heygem-launch --check-only`, on a machine with an NVIDIA GPU.
#
#   scripts/gpu-check.sh prepare   # here, with PyPI: wheels the GPU machine lacks + the provider stand-in
#   scripts/gpu-check.sh           # there, offline: install them with --no-index, run the checks (< 8 min)
#
# The GPU machine has python3 (3.12) with pytest, click, nvidia-ml-py, numpy, NVIDIA's CUDA 13 wheels and the
# CPU `onnxruntime`, but no network and no room for onnxruntime-gpu (284 MB provider library), so it shows
# the NVML inventory, a library table with its real libcuda.so.1, and the onnxruntime_cpu_only verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.whl

if [ "${1:-run}" = prepare ]; then
    rm -rf "$carry" && mkdir -p "$carry"
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
        -d "$carry" python-dotenv supervisor pyelftools inotify_simple
    python3 -m pip wheel -q --no-deps -w "$carry" .
    python3 -c 'import sys; sys.path.insert(0, "tests"); from pathlib import Path; import stubelf
stubelf.make_stub(Path(sys.argv[1]), stubelf.NEEDED_1_31)' "$carry/provider-stub.so"
    du -sh "$carry"
    exit 0
fi

site=/tmp/heygem-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$carry"/*.whl
export PYTHONPATH="$site" PATH="$site/bin:$PATH" PYTHONUNBUFFERED=1
export HEYGEM_TEST_PROVIDER_STUB="$PWD/$carry/provider-stub.so"
# The preflight checks the app command; the repo root has no app.py.
export HEYGEM_APP_COMMAND="python3 -c pass"
echo "== nvidia-smi"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
echo "== GPU health (NVML as the launcher reads it, and launcher/preflight/gpuhealth.py's findings)"
timeout 60 python3 - <<'PY' || true
from launcher.preflight.gpuhealth import assess
from launcher.system import gpu

inventory = gpu.inventory()
print(f"driver {inventory.driver_version}, CUDA {inventory.cuda_driver_version}" if inventory.available else inventory.reason)
for g in inventory.gpus:
    print(
        f"[{g.index}] {g.name} {g.uuid}: compute mode {g.compute_mode}, free {g.memory_free_mib}/{g.memory_total_mib} MiB, "
        f"processes {list(g.process_pids)}, retired pages pending {g.retired_pages_pending}, "
        f"row remap pending {g.remapped_rows_pending} failed {g.remapped_rows_failure}, "
        f"volatile uncorrectable ECC {g.ecc_volatile_uncorrected}, clocks event reasons {g.clocks_event_reasons}, "
        f"MIG {g.mig_mode}, recovery action {g.recovery_action}"
    )
    for finding in assess(g) or ():
        print("    " + finding.line())
    if not assess(g):
        print("    healthy: no condition of the table holds")
PY
echo "== pytest -m gpu"
status=0
timeout 300 python3 -m pytest -p no:cacheprovider -m gpu -v -s tests/system/test_gpu.py || status=$?
echo "== heygem-launch doctor"; timeout 120 python3 -m launcher doctor --conda-env "" || true
echo "== heygem-launch --check-only (this interpreter's env)"
rc=0
timeout 120 python3 -m launcher --check-only --conda-env "" || rc=$?
echo "heygem-launch exit code: $rc"
[ "$rc" = 0 ] || [ "$rc" = 69 ] || status=1
exit "$status"
