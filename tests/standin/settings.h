/* The stand-in NVIDIA driver's settings, shared by libnvidia-ml.c and libcuda.c (tests/standin_driver.py).
 *
 * One file, `stand-in-driver.conf`, next to the library as the loader found it (dladdr: the folder the test put on
 * LD_LIBRARY_PATH, so each test has its own driver), or $STAND_IN_DRIVER_CONF. Lines are `key value`; the value
 * runs to the end of the line. A query's value `!N` makes that query return NVML error N instead (3: not
 * supported), as a real driver does for what a GPU lacks.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STANDIN_MAX_KEYS 512

static char standin_keys[STANDIN_MAX_KEYS][64];
static char standin_values[STANDIN_MAX_KEYS][256];
static int standin_count = -1;

static void standin_load(void) {
    if (standin_count >= 0) return;
    standin_count = 0;
    char path[4096];
    const char *given = getenv("STAND_IN_DRIVER_CONF");
    if (given != NULL) {
        snprintf(path, sizeof path, "%s", given);
    } else {
        Dl_info info;
        if (!dladdr((void *)standin_load, &info) || info.dli_fname == NULL) return;
        snprintf(path, sizeof path, "%s", info.dli_fname);
        char *slash = strrchr(path, '/');
        if (slash == NULL) return;
        snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "stand-in-driver.conf");
    }
    FILE *file = fopen(path, "r");
    if (file == NULL) return;
    char line[400];
    while (standin_count < STANDIN_MAX_KEYS && fgets(line, sizeof line, file) != NULL) {
        line[strcspn(line, "\n")] = 0;
        char *space = strchr(line, ' ');
        if (space == NULL || line[0] == '#') continue;
        *space = 0;
        snprintf(standin_keys[standin_count], 64, "%.63s", line);
        snprintf(standin_values[standin_count], 256, "%.255s", space + 1);
        standin_count++;
    }
    fclose(file);
}

/* The value of `key`, or NULL. */
static const char *standin_get(const char *key) {
    standin_load();
    for (int i = 0; i < standin_count; i++)
        if (strcmp(standin_keys[i], key) == 0) return standin_values[i];
    return NULL;
}

__attribute__((unused)) static const char *standin_gpu_get(unsigned index, const char *key) {
    char name[64];
    snprintf(name, sizeof name, "gpu.%u.%s", index, key);
    return standin_get(name);
}

/* `!N` in a value: the query fails with NVML error N. */
__attribute__((unused)) static int standin_error(const char *value) { return value != NULL && value[0] == '!' ? atoi(value + 1) : 0; }

static unsigned long long standin_number(const char *value, unsigned long long otherwise) {
    return value == NULL || value[0] == '!' ? otherwise : strtoull(value, NULL, 0);
}
