/*
 * fb_bench.c - measurements that need a live sandbox, for bench/run.sh.
 *
 *   fb-bench exec BACKEND COUNT    exec round trips of /bin/true in one sandbox,
 *                                  and, in the same sandbox, interleaved with
 *                                  them, the guest's own cost of spawning
 *                                  /bin/true (a shell loop of COUNT runs,
 *                                  repeated): the protocol's overhead is the
 *                                  difference of the two.  For a VM also the
 *                                  QEMU process's CPU time per exec and per
 *                                  guest spawn (for a jail that figure is
 *                                  its init's alone: meaningless); and, also
 *                                  interleaved, the round trip of a request
 *                                  with no spawn (the get of an empty file):
 *                                  the protocol's own share (get_us)
 *   fb-bench faults BACKEND COUNT  guest page faults per exec of /bin/true
 *                                  and per spawn by the guest's own loop
 *                                  (the guest kernel's pgfault count; VM
 *                                  only: a jail reads the host's)
 *   fb-bench memory BACKEND MIB [busy|execs]
 *                                  host memory of one idle sandbox after one
 *                                  exec; with "execs", after 21 execs of
 *                                  /bin/true; with "busy", after a fixed workload
 *                                  (Python imports and arithmetic, a git
 *                                  repository, a directory walk; three
 *                                  times), when a VM's translation cache has
 *                                  filled: its steady state
 *                                  (FB_BENCH_SMAPS=1: its largest mappings on
 *                                  stderr; FB_BENCH_HOLD=SECONDS: kept alive
 *                                  that long after printing)
 *
 * Every command: FB_BENCH_NO_VM_SNAPSHOT=1 boots VMs cold;
 * FB_BENCH_TCG_CACHE_MIB=N sizes a TCG VM's translation cache
 * (sandbox.vm_tcg_cache_mib).
 *
 * Prints one JSON object on stdout.  Uses only the public sandbox.h API, the
 * same one `forgebox run` and the gateway use.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <time.h>
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
    /* sandbox.vm_tcg_cache_mib's trade-off, measured. */
    if (getenv("FB_BENCH_TCG_CACHE_MIB"))
        cfg.tcg_cache_mib = strtoull(getenv("FB_BENCH_TCG_CACHE_MIB"), NULL, 10);
    fb_sandbox *sb;
    fb_err err = {{0}};
    if (fb_sandbox_create(&cfg, &sb, &err) < 0) {
        fprintf(stderr, "fb-bench: %s\n", err.msg);
        exit(1);
    }
    return sb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char out_buf[256];
static size_t out_len;

static void collect(void *ctx, int stream, const void *data, size_t len)
{
    (void)ctx;
    if (stream != FB_STREAM_STDOUT)
        return;
    if (len > sizeof out_buf - 1 - out_len)
        len = sizeof out_buf - 1 - out_len;
    memcpy(out_buf + out_len, data, len);
    out_len += len;
}

/* Microseconds per /bin/true spawned and waited for by a shell loop inside
 * the sandbox (fork, exec, exit, wait), or -1. */
static double guest_loop_us(fb_sandbox *sb, int n)
{
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    if (n == 0)
        snprintf(count, sizeof count, "0");
    const char *argv[] = {"sh", "-c",
                          "n=$1; s=$(date +%s%N); i=0; while [ $i -lt $n ]; do /bin/true; "
                          "i=$((i+1)); done; e=$(date +%s%N); echo $(( (e - s) / (n ? n : 1) / 1000 ))",
                          "loop", count, NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 600000, .stdin_fd = -1};
    fb_exec_result res;
    fb_err err = {{0}};
    out_len = 0;
    req.on_output = collect;
    if (fb_sandbox_exec(sb, &req, &res, &err) < 0 || !res.started || res.exit_code != 0) {
        fprintf(stderr, "fb-bench: guest loop failed: %s\n", err.msg);
        return -1;
    }
    out_buf[out_len < sizeof out_buf ? out_len : sizeof out_buf - 1] = '\0';
    return atof(out_buf);
}

/* The guest kernel's page fault count (/proc/vmstat pgfault), read by a
 * command of its own, or -1. */
static double guest_pgfaults(fb_sandbox *sb)
{
    const char *argv[] = {"sh", "-c", "sed -n 's/^pgfault //p' /proc/vmstat", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 60000, .stdin_fd = -1, .on_output = collect};
    fb_exec_result res;
    fb_err err = {{0}};
    out_len = 0;
    if (fb_sandbox_exec(sb, &req, &res, &err) < 0 || !res.started || res.exit_code != 0) {
        fprintf(stderr, "fb-bench: pgfault read failed: %s\n", err.msg);
        return -1;
    }
    out_buf[out_len < sizeof out_buf ? out_len : sizeof out_buf - 1] = '\0';
    return atof(out_buf);
}

/* CPU time (ns) all threads of pid have run: under TCG the guest's work
 * and QEMU's, which, unlike wall time, other load on the host leaves
 * alone. */
static uint64_t proc_cpu_ns(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    uint64_t sum = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[384], buf[128];
        snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", pid, de->d_name);
        FILE *f = fopen(p, "re");
        unsigned long long ns;
        if (f && fgets(buf, sizeof buf, f) && sscanf(buf, "%llu", &ns) == 1)
            sum += ns;
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return sum;
}

static uint64_t self_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
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

/* A round trip with no spawn: the get of a small file (the frames both
 * ways, the agent's loop, the host's side), the protocol's own cost. */
static int run_get(fb_sandbox *sb, int null_fd)
{
    fb_err err = {{0}};
    if (lseek(null_fd, 0, SEEK_SET) < 0 || fb_file_get(sb, "/workspace/.fb-bench-get", null_fd, 4096, &err) != FB_OK) {
        fprintf(stderr, "fb-bench: file get failed: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* The "busy" workload of `fb-bench memory`: what a tool call typically
 * runs, enough for a VM's translation cache to fill. */
static int run_busy(fb_sandbox *sb)
{
    const char *argv[] = {
        "sh", "-c",
        "cd /tmp && for i in 1 2 3; do "
        "python3 -c 'import asyncio, unittest, http.server, json, email.parser, sqlite3, decimal; "
        "print(sum(i * i for i in range(20000)))' >/dev/null || exit 1; "
        "rm -rf r$i && git init -q r$i && cd r$i && echo x > f && git add f && "
        "git -c user.email=b@example.invalid -c user.name=b commit -qm m && git log --oneline >/dev/null && "
        "cd .. || exit 1; ls -lR /usr/lib/python3* >/dev/null; done",
        NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 600000, .stdin_fd = -1};
    fb_exec_result res;
    fb_err err = {{0}};
    if (fb_sandbox_exec(sb, &req, &res, &err) < 0 || !res.started || res.exit_code != 0) {
        fprintf(stderr, "fb-bench: the busy workload failed (exit %d): %s\n", res.exit_code, err.msg);
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

/* FB_BENCH_SMAPS=1: every mapping of pid with more than 256 KiB resident
 * or 64 KiB private (Anonymous: its own pages, counted in
 * anon_beyond_guest_kib), with its Rss, Pss, Anonymous and AnonHugePages,
 * on stderr. */
static void smaps_dump(int pid)
{
    char path[64], line[512], head[512] = "";
    snprintf(path, sizeof path, "/proc/%d/smaps", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    unsigned long rss = 0, pss = 0, anon = 0, thp = 0;
    bool have = false;
    for (;;) {
        char *got = fgets(line, sizeof line, f);
        unsigned long lo, hi;
        bool is_head = got && sscanf(line, "%lx-%lx ", &lo, &hi) == 2;
        if (!got || is_head) {
            if (have && (rss > 256 || anon > 64))
                fprintf(stderr, "smaps: rss %6lu KiB pss %6lu KiB anon %6lu KiB thp %6lu KiB  %s", rss,
                        pss, anon, thp, head);
            if (!got)
                break;
            snprintf(head, sizeof head, "%s", line);
            rss = pss = anon = thp = 0;
            have = true;
            continue;
        }
        unsigned long v;
        if (sscanf(line, "Rss: %lu kB", &v) == 1)
            rss = v;
        else if (sscanf(line, "Pss: %lu kB", &v) == 1)
            pss = v;
        else if (sscanf(line, "Anonymous: %lu kB", &v) == 1)
            anon = v;
        else if (sscanf(line, "AnonHugePages: %lu kB", &v) == 1)
            thp = v;
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "exec") == 0) {
        int n = atoi(argv[3]);
        if (n < 4 || n > 100000)
            return 2;
        fb_sandbox *sb = make(argv[2], 0);
        uint64_t *t = calloc((size_t)n, sizeof *t);
        run_true(sb); /* warm-up */
        if (guest_loop_us(sb, 5) < 0)
            return 1;
        /* Four rounds, each a quarter of the round trips and then the
         * guest's own loop of as many spawns: both see the same guest,
         * the same translation cache and the same host load. */
        enum { ROUNDS = 4 };
        double guest[ROUNDS];
        int done = 0, pid = fb_sandbox_pid(sb);
        uint64_t exec_cpu = 0, loop_cpu = 0, host_cpu = 0, refused_cpu = 0;
        uint64_t *rt = calloc((size_t)n, sizeof *rt);
        int nrt = 0, null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        fb_err perr = {{0}};
        if (null_fd < 0 || fb_file_put(sb, "/workspace/.fb-bench-get", null_fd, 0644, &perr) != FB_OK) {
            fprintf(stderr, "fb-bench: file put failed: %s\n", perr.msg);
            return 1;
        }
        for (int r = 0; r < ROUNDS; r++) {
            int k = r == ROUNDS - 1 ? n - done : n / ROUNDS;
            uint64_t c0 = proc_cpu_ns(pid), h0 = self_cpu_ns();
            for (int i = 0; i < k; i++) {
                uint64_t t0 = fb_now_ns();
                if (run_true(sb) < 0)
                    return 1;
                t[done++] = fb_now_ns() - t0;
            }
            uint64_t c1 = proc_cpu_ns(pid);
            host_cpu += self_cpu_ns() - h0;
            exec_cpu += c1 - c0;
            if ((guest[r] = guest_loop_us(sb, k)) < 0)
                return 1;
            uint64_t c2 = proc_cpu_ns(pid);
            /* The loop's own start (sh, two dates) is no spawn of /bin/true. */
            if (guest_loop_us(sb, 0) < 0)
                return 1;
            uint64_t empty = proc_cpu_ns(pid) - c2;
            loop_cpu += c2 - c1 > empty ? c2 - c1 - empty : 0;
            uint64_t c3 = proc_cpu_ns(pid);
            for (int i = 0; i < k; i++) {
                uint64_t t0 = fb_now_ns();
                if (run_get(sb, null_fd) < 0)
                    return 1;
                rt[nrt++] = fb_now_ns() - t0;
            }
            refused_cpu += proc_cpu_ns(pid) - c3;
        }
        qsort(t, (size_t)n, sizeof *t, cmp_u64);
        qsort(guest, ROUNDS, sizeof *guest, cmp_double);
        qsort(rt, (size_t)nrt, sizeof *rt, cmp_u64);
        double g = (guest[ROUNDS / 2 - 1] + guest[ROUNDS / 2]) / 2;
        printf("{\"median_us\": %.1f, \"p90_us\": %.1f, \"count\": %d, \"guest_us\": %.1f, "
               "\"guest_rounds_us\": [%.0f, %.0f, %.0f, %.0f], \"overhead_us\": %.1f, "
               "\"sandbox_cpu_per_exec_us\": %.1f, \"sandbox_cpu_per_guest_spawn_us\": %.1f, "
               "\"host_cpu_per_exec_us\": %.1f, \"get_us\": %.1f, "
               "\"sandbox_cpu_per_get_us\": %.1f}\n",
               t[n / 2] / 1e3, t[(n * 9) / 10] / 1e3, n, g, guest[0], guest[1], guest[2], guest[3],
               t[n / 2] / 1e3 - g, exec_cpu / 1e3 / n, loop_cpu / 1e3 / n, host_cpu / 1e3 / n,
               rt[nrt / 2] / 1e3, refused_cpu / 1e3 / nrt);
        fb_sandbox_destroy(sb);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "faults") == 0) {
        /* Guest page faults per exec of /bin/true and per spawn by the
         * guest's own loop, each net of the reads' own (two reads back to
         * back). */
        int n = atoi(argv[3]);
        if (n < 1 || n > 100000)
            return 2;
        fb_sandbox *sb = make(argv[2], 0);
        run_true(sb);
        double a = guest_pgfaults(sb), b = guest_pgfaults(sb);
        for (int i = 0; i < n; i++)
            if (run_true(sb) < 0)
                return 1;
        double c = guest_pgfaults(sb);
        if (guest_loop_us(sb, 0) < 0)
            return 1;
        double d = guest_pgfaults(sb);
        if (guest_loop_us(sb, n) < 0)
            return 1;
        double e = guest_pgfaults(sb);
        double reads = b - a;
        printf("{\"faults_per_exec\": %.1f, \"faults_per_guest_spawn\": %.1f, \"faults_per_read\": %.0f}\n",
               (c - b - reads) / n, ((e - d) - (d - c)) / n, reads);
        fb_sandbox_destroy(sb);
        return 0;
    }
    if ((argc == 4 || (argc == 5 && (strcmp(argv[4], "busy") == 0 || strcmp(argv[4], "execs") == 0))) &&
        strcmp(argv[1], "memory") == 0) {
        uint64_t mib = strtoull(argv[3], NULL, 10);
        fb_sandbox *sb = make(argv[2], mib);
        run_true(sb);
        if (argc == 5 && strcmp(argv[4], "busy") == 0 && run_busy(sb) < 0)
            return 1;
        /* "execs": 20 more execs of /bin/true, each a new process (under
         * TCG: translated afresh where its code's addresses are new). */
        for (int i = 0; argc == 5 && strcmp(argv[4], "execs") == 0 && i < 20; i++)
            if (run_true(sb) < 0)
                return 1;
        uint64_t total, guest;
        rss_split(fb_sandbox_pid(sb), mib * 1024 * 1024, &total, &guest);
        unsigned long long pss = 0, anon = 0;
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", fb_sandbox_pid(sb));
        FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof line, f)) {
            (void)(sscanf(line, "Pss: %llu kB", &pss) == 1 || sscanf(line, "Anonymous: %llu kB", &anon) == 1);
        }
        if (f)
            fclose(f);
        if (getenv("FB_BENCH_SMAPS"))
            smaps_dump(fb_sandbox_pid(sb));
        uint64_t self_total, self_guest;
        rss_split((int)getpid(), 0, &self_total, &self_guest);
        /* anon_beyond_guest_kib: QEMU's own private memory (heap, TCG
         * cache, device state), which no other VM shares; the rest of the
         * PSS beyond guest RAM is the binary and libraries, divided among
         * however many QEMUs run. */
        printf("{\"rss_kib\": %llu, \"pss_kib\": %llu, \"guest_ram_rss_kib\": %llu, "
               "\"anon_beyond_guest_kib\": %llu, \"manager_rss_kib\": %llu}\n",
               (unsigned long long)total, pss, (unsigned long long)guest,
               anon > guest ? anon - guest : 0ull,
               (unsigned long long)self_total);
        /* FB_BENCH_HOLD=SECONDS: keep the sandbox that long after the
         * figures (to look at it from outside: gdb, smaps, several alive). */
        if (getenv("FB_BENCH_HOLD")) {
            fflush(stdout);
            sleep((unsigned)atoi(getenv("FB_BENCH_HOLD")));
        }
        fb_sandbox_destroy(sb);
        return 0;
    }
    fprintf(stderr, "usage: fb-bench exec jail|vm COUNT | memory jail|vm MIB [busy|execs]\n");
    return 2;
}
