/*
 * fb_bench.c - measurements that need a live sandbox, for bench/run.sh.
 *
 *   fb-bench exec BACKEND COUNT    exec round trips of /bin/true in one sandbox
 *   fb-bench memory BACKEND MIB    host memory of one idle sandbox
 *
 * Prints one JSON object on stdout.  Uses only the public sandbox.h API, the
 * same one `forgebox run` and the gateway use.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/sandbox.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static fb_sandbox *make(const char *backend, uint64_t mib)
{
    fb_sandbox_config cfg;
    fb_sandbox_config_defaults(&cfg);
    cfg.backend = strcmp(backend, "jail") == 0 ? FB_BACKEND_JAIL : FB_BACKEND_VM;
    if (mib)
        cfg.memory_mib = mib;
    cfg.image_dir = getenv("FORGEBOX_IMAGE") ? getenv("FORGEBOX_IMAGE") : "build/image";
    if (getenv("FORGEBOX_STATE_DIR"))
        cfg.state_dir = getenv("FORGEBOX_STATE_DIR");
    if (getenv("FORGEBOX_RUN_DIR"))
        cfg.run_dir = getenv("FORGEBOX_RUN_DIR");
    /* bench/snapshot.py: a cold VM's memory beside a restored one's. */
    cfg.no_vm_snapshot = getenv("FB_BENCH_NO_VM_SNAPSHOT") != NULL;
    fb_sandbox *sb;
    fb_err err = {{0}};
    if (fb_sandbox_create(&cfg, &sb, &err) < 0) {
        fprintf(stderr, "fb-bench: %s\n", err.msg);
        exit(1);
    }
    return sb;
}

static int run_true(fb_sandbox *sb)
{
    const char *argv[] = {"/bin/true", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 10000, .stdin_fd = -1};
    fb_exec_result res;
    fb_err err = {{0}};
    if (fb_sandbox_exec(sb, &req, &res, &err) < 0 || !res.started || res.exit_code != 0) {
        fprintf(stderr, "fb-bench: exec failed: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Resident memory of a process, split into the guest-RAM mapping (the one
 * anonymous mapping of exactly the guest's size) and everything else. */
static void rss_split(int pid, uint64_t guest_bytes, uint64_t *total_kib, uint64_t *guest_kib)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/smaps", pid);
    FILE *f = fopen(path, "re");
    *total_kib = *guest_kib = 0;
    if (!f)
        return;
    bool in_guest = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, ' ')) {
            in_guest = (uint64_t)(hi - lo) == guest_bytes;
            continue;
        }
        unsigned long kib;
        if (sscanf(line, "Rss: %lu kB", &kib) == 1) {
            *total_kib += kib;
            if (in_guest)
                *guest_kib += kib;
        }
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "exec") == 0) {
        int n = atoi(argv[3]);
        if (n < 1 || n > 100000)
            return 2;
        fb_sandbox *sb = make(argv[2], 0);
        uint64_t *t = calloc((size_t)n, sizeof *t);
        run_true(sb); /* warm-up */
        for (int i = 0; i < n; i++) {
            uint64_t t0 = fb_now_ns();
            if (run_true(sb) < 0)
                return 1;
            t[i] = fb_now_ns() - t0;
        }
        qsort(t, (size_t)n, sizeof *t, cmp_u64);
        printf("{\"median_us\": %.1f, \"p90_us\": %.1f, \"count\": %d}\n", t[n / 2] / 1e3,
               t[(n * 9) / 10] / 1e3, n);
        fb_sandbox_destroy(sb);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "memory") == 0) {
        uint64_t mib = strtoull(argv[3], NULL, 10);
        fb_sandbox *sb = make(argv[2], mib);
        run_true(sb);
        uint64_t total, guest;
        rss_split(fb_sandbox_pid(sb), mib * 1024 * 1024, &total, &guest);
        unsigned long long pss = 0;
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", fb_sandbox_pid(sb));
        FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "Pss: %llu kB", &pss) == 1)
                break;
        if (f)
            fclose(f);
        uint64_t self_total, self_guest;
        rss_split((int)getpid(), 0, &self_total, &self_guest);
        printf("{\"rss_kib\": %llu, \"pss_kib\": %llu, \"guest_ram_rss_kib\": %llu, "
               "\"manager_rss_kib\": %llu}\n",
               (unsigned long long)total, pss, (unsigned long long)guest,
               (unsigned long long)self_total);
        fb_sandbox_destroy(sb);
        return 0;
    }
    fprintf(stderr, "usage: fb-bench exec jail|vm COUNT | memory jail|vm MIB\n");
    return 2;
}
