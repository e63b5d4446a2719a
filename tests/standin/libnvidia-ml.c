/* A stand-in libnvidia-ml.so.1 (NVML) for tests on machines without a GPU: it answers nvidia-ml-py (pynvml) from
 * the settings (settings.h; written by tests/standin_driver.py), with the signatures of NVIDIA's nvml.h
 * (docs.nvidia.com/deploy/nvml-api) as nvidia-ml-py 13 calls them.
 *
 * Events (XIDs, a lost GPU): nvmlEventSetWait_v2 delivers the lines a test appends to the file named by the `events`
 * setting (tests/standin_driver.py's raise_xid / raise_nvml_error), from the end the file had when the set was made
 * (NVML delivers only what happens after registration). A line is `GPU XID` (an XidCriticalError event for that GPU;
 * `GPU XID N` also sets that GPU's recovery action to N first, for this process, as the driver does before XID 154)
 * or `GPU !N` / `* !N` (the wait fails with NVML error N, and every later query on that GPU, or all GPUs, fails the
 * same way: 15 GPU_IS_LOST, 999 Unknown Error). The wait sleeps in poll() on an inotify watch of the file's folder:
 * like the real driver's, it wakes only for an event or at its timeout.
 */
#include "settings.h"

#include <limits.h>
#include <poll.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum { NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2, NVML_ERROR_NOT_SUPPORTED = 3,
       NVML_ERROR_INSUFFICIENT_SIZE = 7, NVML_ERROR_TIMEOUT = 10 };

#define MAX_GPUS 16
typedef struct { unsigned index; } standin_device; /* what nvmlDevice_t points to */
static standin_device devices[MAX_GPUS];
static int initialized; /* nvmlInit's count: NVML stays up until as many nvmlShutdown calls (nvml.h) */
static int lost[MAX_GPUS]; /* an NVML error every query on that GPU now returns (an event line's `!N`) */
/* The recovery action an event line `GPU 154 N` set (the driver changes it, then says so with XID 154); before one
 * comes, the setting's. */
static int recovery_set[MAX_GPUS];
static unsigned recovery_now[MAX_GPUS];

static unsigned gpu_count(void) {
    unsigned count = (unsigned)standin_number(standin_get("gpu_count"), 0);
    return count > MAX_GPUS ? MAX_GPUS : count;
}

static unsigned long long gpu_number(const standin_device *d, const char *key, unsigned long long otherwise) {
    return standin_number(standin_gpu_get(d->index, key), otherwise);
}

/* NVML_ERROR_N when the setting says `!N`, NVML_ERROR_UNINITIALIZED before nvmlInit, else 0. */
static nvmlReturn_t query(const standin_device *d, const char *key) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (d == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (lost[d->index]) return lost[d->index];
    return standin_error(standin_gpu_get(d->index, key));
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    nvmlReturn_t failed = (nvmlReturn_t)standin_number(standin_get("nvml.init"), 0);
    if (failed) return failed;
    initialized++;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t copy_text(const char *value, char *out, unsigned int length) {
    if (out == NULL || length == 0) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, value);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    const char *value = standin_get("driver_version");
    return copy_text(value ? value : "550.54.15", version, length);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    return copy_text("12.550.54.15", version, length);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    if (version == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *version = (int)standin_number(standin_get("cuda_driver_version"), 12040);
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) { return nvmlSystemGetCudaDriverVersion_v2(version); }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    *count = gpu_count();
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, standin_device **device) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (index >= gpu_count() || device == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    devices[index].index = index;
    *device = &devices[index];
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, standin_device **device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetIndex(standin_device *d, unsigned int *index) {
    nvmlReturn_t failed = query(d, "index");
    if (failed) return failed;
    *index = d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(standin_device *d, char *name, unsigned int length) {
    nvmlReturn_t failed = query(d, "name");
    const char *value = standin_gpu_get(d ? d->index : 0, "name");
    return failed ? failed : copy_text(value ? value : "NVIDIA Stand-in GPU", name, length);
}

nvmlReturn_t nvmlDeviceGetUUID(standin_device *d, char *uuid, unsigned int length) {
    nvmlReturn_t failed = query(d, "uuid");
    if (failed) return failed;
    const char *value = standin_gpu_get(d->index, "uuid");
    char made[96];
    snprintf(made, sizeof made, "GPU-00000000-0000-0000-0000-%012u", d->index);
    return copy_text(value ? value : made, uuid, length);
}

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;

nvmlReturn_t nvmlDeviceGetMemoryInfo(standin_device *d, nvmlMemory_t *memory) {
    nvmlReturn_t failed = query(d, "memory_total_mib");
    if (failed) return failed;
    memory->total = gpu_number(d, "memory_total_mib", 24564) << 20;
    memory->used = gpu_number(d, "memory_used_mib", 0) << 20;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(standin_device *d, nvmlMemory_v2_t *memory) {
    nvmlMemory_t v1;
    nvmlReturn_t failed = nvmlDeviceGetMemoryInfo(d, &v1);
    if (failed) return failed;
    memory->total = v1.total, memory->reserved = 0, memory->free = v1.free, memory->used = v1.used;
    return NVML_SUCCESS;
}

typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;

nvmlReturn_t nvmlDeviceGetUtilizationRates(standin_device *d, nvmlUtilization_t *rates) {
    nvmlReturn_t failed = query(d, "utilization");
    if (failed) return failed;
    rates->gpu = (unsigned)gpu_number(d, "utilization", 0);
    rates->memory = 0;
    return NVML_SUCCESS;
}

typedef struct { unsigned int pid; unsigned long long usedGpuMemory; unsigned int gpuInstanceId, computeInstanceId; }
    nvmlProcessInfo_t;

/* `gpu.N.processes PID:MIB,PID:MIB`: the compute processes NVML lists on the GPU. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(standin_device *d, unsigned int *count, nvmlProcessInfo_t *out) {
    nvmlReturn_t failed = query(d, "processes");
    if (failed) return failed;
    const char *value = standin_gpu_get(d->index, "processes");
    nvmlProcessInfo_t found[64];
    unsigned n = 0;
    for (const char *at = value; at != NULL && *at && n < 64;) {
        char *end;
        found[n].pid = (unsigned)strtoul(at, &end, 10);
        found[n].usedGpuMemory = (*end == ':' ? strtoull(end + 1, &end, 10) : 0) << 20;
        found[n].gpuInstanceId = found[n].computeInstanceId = 0xFFFFFFFF;
        n++;
        at = *end == ',' ? end + 1 : NULL;
    }
    if (n == 0) {
        *count = 0;
        return NVML_SUCCESS;
    }
    if (out == NULL || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(out, found, n * sizeof *out);
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(standin_device *d, int *pending) {
    nvmlReturn_t failed = query(d, "retired_pages_pending");
    if (failed) return failed;
    *pending = (int)gpu_number(d, "retired_pages_pending", 0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRemappedRows(standin_device *d, unsigned int *corrected, unsigned int *uncorrected,
                                       unsigned int *pending, unsigned int *failure) {
    nvmlReturn_t failed = query(d, "remapped_rows");
    if (failed) return failed;
    *corrected = (unsigned)gpu_number(d, "remapped_rows_corrected", 0);
    *uncorrected = (unsigned)gpu_number(d, "remapped_rows_uncorrected", 0);
    *pending = (unsigned)gpu_number(d, "remapped_rows_pending", 0);
    *failure = (unsigned)gpu_number(d, "remapped_rows_failure", 0);
    return NVML_SUCCESS;
}

/* errorType 1 = NVML_MEMORY_ERROR_TYPE_UNCORRECTED, counterType 0 = NVML_VOLATILE_ECC (since the driver loaded). */
nvmlReturn_t nvmlDeviceGetTotalEccErrors(standin_device *d, int error_type, int counter_type,
                                         unsigned long long *count) {
    nvmlReturn_t failed = query(d, "ecc");
    if (failed) return failed;
    const char *key = error_type == 1 ? (counter_type == 0 ? "ecc_volatile_uncorrected" : "ecc_aggregate_uncorrected")
                                      : (counter_type == 0 ? "ecc_volatile_corrected" : "ecc_aggregate_corrected");
    *count = gpu_number(d, key, 0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(standin_device *d, unsigned long long *reasons) {
    nvmlReturn_t failed = query(d, "clocks_event_reasons");
    if (failed) return failed;
    *reasons = gpu_number(d, "clocks_event_reasons", 0);
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(standin_device *d, unsigned long long *reasons) {
    return nvmlDeviceGetCurrentClocksEventReasons(d, reasons);
}

nvmlReturn_t nvmlDeviceGetComputeMode(standin_device *d, int *mode) {
    nvmlReturn_t failed = query(d, "compute_mode");
    if (failed) return failed;
    *mode = (int)gpu_number(d, "compute_mode", 0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(standin_device *d, unsigned int *current, unsigned int *pending) {
    nvmlReturn_t failed = query(d, "mig_mode");
    if (failed) return failed;
    *current = *pending = (unsigned)gpu_number(d, "mig_mode", 0);
    return NVML_SUCCESS;
}

typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    int valueType, nvmlReturn;
    union { double d; unsigned int ui; unsigned long ul; unsigned long long ull; long long sll; int si; } value;
} nvmlFieldValue_t;

#define NVML_FI_DEV_GET_GPU_RECOVERY_ACTION 230

/* Only the recovery action is known; every other field answers NOT_SUPPORTED in its own nvmlReturn. */
nvmlReturn_t nvmlDeviceGetFieldValues(standin_device *d, int count, nvmlFieldValue_t *values) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (d == NULL || values == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < count; i++) {
        const char *value = standin_gpu_get(d->index, "recovery_action");
        values[i].valueType = 1; /* NVML_VALUE_TYPE_UNSIGNED_INT */
        if (values[i].fieldId == NVML_FI_DEV_GET_GPU_RECOVERY_ACTION && recovery_set[d->index]) {
            values[i].nvmlReturn = NVML_SUCCESS;
            values[i].value.ui = recovery_now[d->index];
            continue;
        }
        if (values[i].fieldId != NVML_FI_DEV_GET_GPU_RECOVERY_ACTION || value == NULL || standin_error(value)) {
            values[i].nvmlReturn = value && standin_error(value) ? standin_error(value) : NVML_ERROR_NOT_SUPPORTED;
            continue;
        }
        values[i].nvmlReturn = NVML_SUCCESS;
        values[i].value.ui = (unsigned)standin_number(value, 0);
    }
    return NVML_SUCCESS;
}

/* -- events ------------------------------------------------------------------------------------------------------ */
#define NVML_EVENT_TYPE_XID_CRITICAL_ERROR 0x8ULL

typedef struct { unsigned long long registered; long offset; int inotify; } standin_event_set;
typedef struct {
    standin_device *device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

static long file_size(const char *path) {
    FILE *file = fopen(path, "r");
    if (file == NULL) return 0;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fclose(file);
    return size;
}

nvmlReturn_t nvmlEventSetCreate(standin_event_set **set) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    const char *path = standin_get("events");
    standin_event_set *made = calloc(1, sizeof *made);
    made->inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (path != NULL) {
        char folder[4096];
        snprintf(folder, sizeof folder, "%s", path);
        char *slash = strrchr(folder, '/');
        if (slash != NULL) *slash = 0;
        inotify_add_watch(made->inotify, folder, IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO);
        made->offset = file_size(path);
    }
    *set = made;
    return NVML_SUCCESS;
}

/* `gpu.N.events !3`: the GPU does not support events (NVML_ERROR_NOT_SUPPORTED), as on some GeForce boards. */
nvmlReturn_t nvmlDeviceRegisterEvents(standin_device *d, unsigned long long types, standin_event_set *set) {
    nvmlReturn_t failed = query(d, "events");
    if (failed) return failed;
    if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & NVML_EVENT_TYPE_XID_CRITICAL_ERROR) set->registered |= 1ULL << d->index;
    return NVML_SUCCESS;
}

/* The next line for a registered GPU: 0 and the event filled in, an NVML error, or -1 when none has come. */
static int next_event(standin_event_set *set, nvmlEventData_t *data) {
    const char *path = standin_get("events");
    FILE *file = path ? fopen(path, "r") : NULL;
    if (file == NULL) return -1;
    fseek(file, set->offset, SEEK_SET);
    char line[128];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, file) != NULL && strchr(line, '\n') != NULL) {
        set->offset = ftell(file);
        char *value = strchr(line, ' ');
        if (value == NULL) continue;
        *value++ = 0;
        int every = strcmp(line, "*") == 0;
        unsigned index = every ? 0 : (unsigned)strtoul(line, NULL, 10);
        if (!every && (index >= MAX_GPUS || !(set->registered & (1ULL << index)))) continue;
        if (value[0] == '!') {
            found = atoi(value + 1);
            for (unsigned i = 0; i < MAX_GPUS; i++)
                if ((every && (set->registered & (1ULL << i))) || (!every && i == index)) lost[i] = found;
            continue;
        }
        devices[index].index = index;
        data->device = &devices[index];
        data->eventType = NVML_EVENT_TYPE_XID_CRITICAL_ERROR;
        char *rest = NULL;
        data->eventData = strtoull(value, &rest, 10);
        if (rest != NULL && *rest == ' ') {
            recovery_set[index] = 1;
            recovery_now[index] = (unsigned)strtoul(rest + 1, NULL, 10);
        }
        data->gpuInstanceId = data->computeInstanceId = 0xFFFFFFFF;
        found = 0;
    }
    fclose(file);
    return found;
}

static long long now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

nvmlReturn_t nvmlEventSetWait_v2(standin_event_set *set, nvmlEventData_t *data, unsigned int timeout_ms) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (set == NULL || data == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int found = next_event(set, data);
        if (found >= 0) return found;
        long long left = deadline - now_ms();
        if (left <= 0) return NVML_ERROR_TIMEOUT;
        struct pollfd wait = {set->inotify, POLLIN, 0};
        poll(&wait, 1, left > INT_MAX ? INT_MAX : (int)left);
        char drained[4096];
        while (read(set->inotify, drained, sizeof drained) > 0) {
        }
    }
}
nvmlReturn_t nvmlEventSetWait(standin_event_set *set, nvmlEventData_t *data, unsigned int timeout_ms) {
    return nvmlEventSetWait_v2(set, data, timeout_ms);
}

nvmlReturn_t nvmlEventSetFree(standin_event_set *set) {
    if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    close(set->inotify);
    free(set);
    return NVML_SUCCESS;
}
