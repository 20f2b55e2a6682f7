/*
 * guest_steps.c - the guest-side cost of the steps fb-agent adds to a spawn
 * (bench/README.md, "Session 6: VM exec overhead"): a diagnostic, not part
 * of the build.  It runs inside a sandbox as the tool user, under the
 * tool's own seccomp filter, and times, interleaved, fork + execve of
 * /bin/true + wait with and without each step, plus each step alone:
 *
 *   cc -O2 -static -I build/gen -o /tmp/guest-steps bench/guest_steps.c
 *   forgebox run --backend vm -q --put /tmp/guest-steps:/workspace/gs -- \
 *       sh -c 'chmod +x /workspace/gs; /workspace/gs 80 0,4,32,36,1,8,16'
 *
 * MODES is a comma list of bit sets: 1 the six setrlimit calls, 4 loading
 * the agent's seccomp program (build/gen/seccomp_bpf.h; stacked on the
 * tool's own, which the agent's child does not have), 8 three pipes, setsid
 * and two dup2, 16 reading /proc/vmstat before the fork and after the wait
 * (the agent's OOM check reads it once before), 32 _exit instead of execve,
 * 64 the parent writes to 32 pages it had written before the fork (as the
 * agent goes on with its loop while the child runs: each is a copy-on-write
 * fault), 128 (with 4) load a one-instruction program (allow all) instead:
 * the load's fixed cost, apart from the program's length.
 * What a tool process cannot do (setresuid, capset, landlock: the filter
 * refuses them) is not measured here.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "seccomp_bpf.h"

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void read_vmstat(void)
{
    char buf[8192];
    int fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!read(fd, buf, sizeof buf);
        close(fd);
    }
}

static char *pages; /* 32 pages, written before every fork */

static void limit(int res, rlim_t v)
{
    struct rlimit rl = {v, v};
    (void)setrlimit(res, &rl);
}

/* One spawn; step[0..2] get the child's rlimit, seccomp and fork-to-child times. */
static double spawn(int mode, double *step)
{
    int p[6];
    if (mode & 8 && (pipe2(p, O_CLOEXEC) < 0 || pipe2(p + 2, O_CLOEXEC) < 0 || pipe2(p + 4, O_CLOEXEC) < 0))
        exit(1);
    for (int i = 0; i < 32; i++)
        pages[i * 4096] = 1;
    double t0 = now_us();
    if (mode & 16)
        read_vmstat();
    pid_t pid = fork();
    if (pid == 0) {
        double a = now_us();
        if (mode & 8 && (setsid() < 0 || dup2(p[1], 1) < 0 || dup2(p[3], 2) < 0))
            _exit(2);
        if (mode & 1) {
            limit(RLIMIT_CORE, 1);
            limit(RLIMIT_SIGPENDING, 64);
            limit(RLIMIT_MSGQUEUE, 64);
            limit(RLIMIT_NPROC, 1000);
            limit(RLIMIT_NOFILE, 1000);
            limit(RLIMIT_FSIZE, 1 << 30);
        }
        double b = now_us();
        if (mode & 4) {
            static struct sock_filter allow_all[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
            struct sock_fprog fp = {sizeof fb_seccomp_plain / sizeof fb_seccomp_plain[0],
                                    (struct sock_filter *)fb_seccomp_plain};
            if (mode & 128)
                fp = (struct sock_fprog){1, allow_all};
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0) < 0)
                _exit(4);
        }
        double c = now_us();
        step[0] = b - a;
        step[1] = c - b;
        step[2] = a - t0;
        if (mode & 32)
            _exit(0);
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    if (mode & 8) {
        close(p[1]);
        close(p[3]);
        close(p[5]);
    }
    if (mode & 64)
        for (int i = 0; i < 32; i++)
            pages[i * 4096] = 2;
    int st = -1;
    waitpid(pid, &st, 0);
    if (mode & 16)
        read_vmstat();
    double t = now_us() - t0;
    if (mode & 8) {
        close(p[0]);
        close(p[2]);
        close(p[4]);
    }
    if (st != 0)
        fprintf(stderr, "mode %d: child status %#x\n", mode, st);
    return t;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: guest-steps N MODE[,MODE...]\n");
        return 2;
    }
    int n = atoi(argv[1]), modes[16], nm = 0;
    for (char *t = strtok(argv[2], ","); t && nm < 16; t = strtok(NULL, ","))
        modes[nm++] = atoi(t);
    if (n < 1 || nm == 0)
        return 2;
    double *shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double *tot = calloc((size_t)(nm * n), sizeof *tot), *st = calloc((size_t)(nm * n * 3), sizeof *st);
    pages = malloc(32 * 4096);
    if (shm == MAP_FAILED || !tot || !st || !pages)
        return 1;
    for (int i = 0; i < n; i++)
        for (int m = 0; m < nm; m++) {
            tot[m * n + i] = spawn(modes[m], shm);
            for (int j = 0; j < 3; j++)
                st[(m * 3 + j) * n + i] = shm[j];
        }
    double v[200];
    for (int i = 0; i < 200; i++) {
        double a = now_us();
        read_vmstat();
        v[i] = now_us() - a;
    }
    qsort(v, 200, sizeof *v, cmp_double);
    printf("one read of /proc/vmstat: median %.1f us\n", v[100]);
    for (int m = 0; m < nm; m++) {
        qsort(tot + m * n, (size_t)n, sizeof *tot, cmp_double);
        for (int j = 0; j < 3; j++)
            qsort(st + (m * 3 + j) * n, (size_t)n, sizeof *st, cmp_double);
        printf("mode %2d: spawn median %8.1f us | rlimits %6.1f  seccomp load %7.1f  fork to child %7.1f\n",
               modes[m], tot[m * n + n / 2], st[(m * 3) * n + n / 2], st[(m * 3 + 1) * n + n / 2],
               st[(m * 3 + 2) * n + n / 2]);
    }
    return 0;
}
