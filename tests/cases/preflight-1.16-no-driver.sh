#!/bin/bash
# From ../shared/cases (issue 9), quoted for shellcheck; tests/test_ort_matrix.py runs it.
# On a host with NO NVIDIA driver (container started without --gpus), heygem-launch reports
# driver_too_old ("upgrade the host driver") instead of driver_missing, for onnxruntime-gpu 1.16.
# Needs: a python 3.8-3.11 ($PY), cc, readelf, heygem-launch on PATH. No GPU, no driver.
set -e
PY=${PY:-python3}; W=${W:-/tmp/case-1.16-no-driver}
rm -rf "$W"; mkdir -p "$W/conda/envs" "$W/app" "$W/stubs"
# The app dir holds the app's script, as HeyGem's does (added here: the preflight now checks it exists).
touch "$W/app/app.py"
$PY -m venv "$W/conda/envs/human" && mkdir "$W/conda/envs/human/conda-meta"
"$W/conda/envs/human/bin/pip" install -q onnxruntime-gpu==1.16.3 'numpy<2' nvidia-cuda-runtime-cu11==11.8.89
# Stand-ins for cuBLAS/cuDNN/cuRAND/cuFFT with the sonames and symbol versions the provider imports, so that
# libonnxruntime_providers_cuda.so loads (as with the real CUDA 11.8 + cuDNN 8 libraries of the
# nvidia/cuda:11.8.0-cudnn8-runtime image). ORT never calls them before cudaSetDevice(). libcudart is real.
PROV=("$W"/conda/envs/human/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so)
for so in libcublasLt.so.11 libcublas.so.11 libcudnn.so.8 libcurand.so.10 libcufft.so.10; do
  { echo 'void heygem_stub(void){}'
    readelf --dyn-syms -W "${PROV[0]}" | awk -v v="@$so" '$7=="UND" && index($8, v) {split($8, a, "@"); print "void " a[1] "(void){}"}' | sort -u
  } > "$W/stubs/$so.c"
  echo "$so { global: *; };" > "$W/stubs/$so.map"
  cc -shared -fPIC -o "$W/conda/envs/human/lib/$so" -Wl,-soname,$so -Wl,--version-script="$W/stubs/$so.map" "$W/stubs/$so.c"
done
cd "$W/app"
HEYGEM_CONDA_ROOT="$W/conda" HEYGEM_CONDA_ENV=human heygem-launch --check-only | grep -E '^GPUs|REFUSED|fix:' ; echo "exit ${PIPESTATUS[0]}"
# Expected: REFUSED [driver_missing] ... `docker run --gpus all`
# Actual:   REFUSED [driver_too_old]: the driver supports CUDA ? but onnxruntime-gpu 1.16.3 needs CUDA ?
#           fix: upgrade the host driver to >= the version NVIDIA lists, ...
