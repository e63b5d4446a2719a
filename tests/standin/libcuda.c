/* A stand-in libcuda.so.1 (the CUDA driver API), for tests on machines without a GPU: its cuInit returns the code
 * the settings give (`cuda.init`), so that NVIDIA's real libcudart, and ONNX Runtime over it, print CUDA's own text
 * for it ("CUDA failure 804: forward compatibility was attempted on non supported HW").
 *
 * libcudart 11.x/12.x reaches the driver through dlsym("cuGetProcAddress") and then asks it for every entry point
 * (seen with libcudart 11.8: cuGetProcAddress itself, cuInit, then cuDriverGetVersion through the returned one);
 * everything but those answers CUDA_ERROR_NOT_INITIALIZED, which no test gets to before cuInit has failed.
 * Known to work under onnxruntime-gpu 1.16.3 (CUDA 11.8). With it, 1.20's provider loads and its static initialisers
 * crash in tests/stubelf.py's cuDNN/cuBLAS stand-ins; 1.31's provider imports driver symbols this file does not
 * export (cuTensorMapEncodeTiled...): see tests/standin_driver.py.
 */
#include "settings.h"

typedef int CUresult;

CUresult cuInit(unsigned int flags) {
    (void)flags;
    return (CUresult)standin_number(standin_get("cuda.init"), 0);
}

/* The newest CUDA the driver supports, as 1000 * major + 10 * minor; libcudart refuses (35) below its own. */
CUresult cuDriverGetVersion(int *version) {
    if (version == NULL) return 1; /* CUDA_ERROR_INVALID_VALUE */
    *version = (int)standin_number(standin_get("cuda_driver_version"), 12040);
    return 0;
}

static CUresult standin_not_initialized(void) { return 3; /* CUDA_ERROR_NOT_INITIALIZED */ }

CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version, unsigned long long flags) {
    (void)cuda_version;
    (void)flags;
    if (symbol == NULL || pfn == NULL) return 1;
    if (strcmp(symbol, "cuInit") == 0)
        *pfn = (void *)cuInit;
    else if (strcmp(symbol, "cuDriverGetVersion") == 0)
        *pfn = (void *)cuDriverGetVersion;
    else if (strcmp(symbol, "cuGetProcAddress") == 0)
        *pfn = (void *)cuGetProcAddress;
    else
        *pfn = (void *)standin_not_initialized;
    return 0;
}

/* CUDA 12's form: the fifth argument says whether the symbol was found (0: found). */
CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version, unsigned long long flags, int *status) {
    if (status != NULL) *status = 0;
    return cuGetProcAddress(symbol, pfn, cuda_version, flags);
}

CUresult cuGetExportTable(const void **table, const void *id) {
    (void)id;
    if (table != NULL) *table = NULL;
    return 3;
}
