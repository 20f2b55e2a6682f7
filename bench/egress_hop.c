/*
 * egress_hop.c - what a relayed TCP hop costs on this kernel, without
 * ForgeBox, Python or a sandbox in the way (bench/README.md, "Session 5").
 *
 * A server thread sends SIZE MiB over loopback TCP; a client thread
 * receives it.  The same transfer, in rounds, interleaved, each mode:
 *
 *   direct   server -> client (one TCP connection)
 *   splice   server -> A | relay thread: splice A -> pipe -> B | B -> client
 *            (two connections, the egress proxy's relay_splice.c loop in
 *            its simplest form: 256 KiB pipe, blocking)
 *   sockmap  the same two connections, A and B in a BPF sockhash whose
 *            sk_skb verdict program redirects what A receives to B's
 *            egress (bpf_sk_redirect_hash, keyed by the peer's socket
 *            cookie), so no thread of ours touches the bytes
 *   ingress  A and the client's own socket C in the sockhash, A's data
 *            redirected into C's receive queue (BPF_F_INGRESS) by the
 *            kernel's sk_skb path (a kworker)
 *   copy     a relay thread moving A -> B with recv/send through a 256 KiB
 *            buffer (the proxy's read/write fallback)
 *   msg      the copy relay, with B in a sockhash whose sk_msg verdict
 *            program redirects everything sent on B into the receive
 *            queue of its peer, the client's own socket C (BPF_F_INGRESS,
 *            C in a second sockhash without programs): the relay still
 *            reads and writes every byte, but the second TCP connection
 *            carries none of them
 *
 * The BPF programs are eleven raw instructions each, loaded with bpf(2)
 * (no libbpf).  The BPF modes need root (or CAP_BPF + CAP_NET_ADMIN); they
 * are skipped with a note when the kernel refuses.  A transfer still
 * running after 10 s (or with no byte for 2 s) is stopped there and
 * counted at the rate it reached, marked incomplete.
 *
 *   cc -O2 -pthread -o build/egress-hop bench/egress_hop.c
 *   build/egress-hop [SIZE_MIB [ROUNDS [RCVBUF]]]   (defaults 1000, 5, 0)
 *
 * RCVBUF, when not 0, is set on the client's socket in every mode
 * (SO_RCVBUFFORCE, so as root it may exceed net.core.rmem_max; it also
 * turns off the socket's receive-buffer autotuning).  The ingress mode
 * needs it: its queue is bounded by the socket's receive buffer, and once
 * full the kernel retries the redirect a jiffy later.
 *
 * Prints each mode's median MiB/s, its ratio to direct, and the CPU time
 * the whole host spent per GiB moved (busy time from /proc/stat across the
 * transfer: kworkers and softirq threads included, and anything else
 * running, so it means something on a quiet host only).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { M_DIRECT, M_SPLICE, M_COPY, M_SOCKMAP, M_INGRESS, M_MSG, M_COUNT };
static const char *const names[M_COUNT] = {"direct", "splice", "copy", "sockmap", "ingress", "msg"};

static long total;
static int rcvbuf;
static char chunk[1 << 20];

static int sys_bpf(int cmd, union bpf_attr *a)
{
    return (int)syscall(SYS_bpf, cmd, a, sizeof *a);
}

/* A sockhash with the verdict program attached; -1 when refused. */
static int sockhash(unsigned flags)
{
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_SOCKHASH;
    a.key_size = 8;
    a.value_size = 8;
    a.max_entries = 4;
    int map = sys_bpf(BPF_MAP_CREATE, &a);
    if (map < 0)
        return -1;
    /* key = the socket cookie of the skb's socket; redirect to the socket
     * stored under it */
    struct bpf_insn prog[] = {
        {BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0},
        {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_socket_cookie},
        {BPF_STX | BPF_MEM | BPF_DW, 10, 0, -8, 0},
        {BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, map},
        {0, 0, 0, 0, 0},
        {BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0},
        {BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0},
        {BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8},
        {BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, (int32_t)flags},
        {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_SK_SKB;
    a.insns = (uint64_t)(uintptr_t)prog;
    a.insn_cnt = sizeof prog / sizeof prog[0];
    a.license = (uint64_t)(uintptr_t)"Dual MIT/GPL";
    int fd = sys_bpf(BPF_PROG_LOAD, &a);
    if (fd < 0) {
        close(map);
        return -1;
    }
    memset(&a, 0, sizeof a);
    a.target_fd = (uint32_t)map;
    a.attach_bpf_fd = (uint32_t)fd;
    a.attach_type = BPF_SK_SKB_VERDICT;
    int rc = sys_bpf(BPF_PROG_ATTACH, &a);
    close(fd); /* the map holds the program */
    if (rc < 0) {
        close(map);
        return -1;
    }
    return map;
}

/* Two sockhashes keyed by a u32 (a socket's remote_port as sk_msg_md
 * shows it): *target without programs, and the returned one with an
 * sk_msg verdict program redirecting each message into the ingress of the
 * socket stored in *target under the sender's remote port.  -1 when
 * refused. */
static int msg_maps(int *target)
{
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_SOCKHASH;
    a.key_size = 4;
    a.value_size = 8;
    a.max_entries = 4;
    int t = sys_bpf(BPF_MAP_CREATE, &a), map = sys_bpf(BPF_MAP_CREATE, &a);
    if (t < 0 || map < 0) {
        if (t >= 0)
            close(t);
        if (map >= 0)
            close(map);
        return -1;
    }
    struct bpf_insn prog[] = {
        {BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0},
        {BPF_LDX | BPF_MEM | BPF_W, 2, 1, (int16_t)offsetof(struct sk_msg_md, remote_port), 0},
        {BPF_STX | BPF_MEM | BPF_W, 10, 2, -4, 0},
        {BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, t},
        {0, 0, 0, 0, 0},
        {BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0},
        {BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0},
        {BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -4},
        {BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, BPF_F_INGRESS},
        {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_msg_redirect_hash},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_SK_MSG;
    a.insns = (uint64_t)(uintptr_t)prog;
    a.insn_cnt = sizeof prog / sizeof prog[0];
    a.license = (uint64_t)(uintptr_t)"Dual MIT/GPL";
    int fd = sys_bpf(BPF_PROG_LOAD, &a);
    int rc = -1;
    if (fd >= 0) {
        memset(&a, 0, sizeof a);
        a.target_fd = (uint32_t)map;
        a.attach_bpf_fd = (uint32_t)fd;
        a.attach_type = BPF_SK_MSG_VERDICT;
        rc = sys_bpf(BPF_PROG_ATTACH, &a);
        close(fd);
    }
    if (rc < 0) {
        close(t);
        close(map);
        return -1;
    }
    *target = t;
    return map;
}

static int put4(int map, uint32_t key, int fd)
{
    uint64_t v = (uint64_t)fd;
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_fd = (uint32_t)map;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&v;
    return sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
}

static uint64_t cookie(int fd)
{
    uint64_t c = 0;
    socklen_t l = sizeof c;
    getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &l);
    return c;
}

static int put(int map, uint64_t key, int fd)
{
    uint64_t v = (uint64_t)fd;
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_fd = (uint32_t)map;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&v;
    return sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
}

/* A connected loopback pair through listener l: *cli connected, *srv accepted. */
static void pair(int l, int *cli, int *srv)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(l, (struct sockaddr *)&sa, &sl);
    *cli = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*cli < 0 || connect(*cli, (struct sockaddr *)&sa, sl) < 0 || (*srv = accept(l, NULL, NULL)) < 0) {
        perror("egress-hop: loopback pair");
        exit(1);
    }
}

static void *server(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (long left = total; left > 0;) {
        ssize_t n = send(fd, chunk, left < (long)sizeof chunk ? (size_t)left : sizeof chunk, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        left -= n;
    }
    shutdown(fd, SHUT_WR);
    return NULL;
}

typedef struct relay_arg {
    int from, to;
} relay_arg;

static void *relay(void *arg)
{
    relay_arg *r = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return NULL;
    fcntl(p[1], F_SETPIPE_SZ, 256 * 1024);
    for (;;) {
        ssize_t n = splice(r->from, NULL, p[1], NULL, 256 * 1024, SPLICE_F_MOVE);
        if (n <= 0)
            break;
        while (n > 0) {
            ssize_t w = splice(p[0], NULL, r->to, NULL, (size_t)n, SPLICE_F_MOVE);
            if (w <= 0)
                goto out;
            n -= w;
        }
    }
    shutdown(r->to, SHUT_WR);
out:
    close(p[0]);
    close(p[1]);
    return NULL;
}

/* Busy CPU seconds of the whole host so far (/proc/stat, all but idle and iowait). */
static double busy_seconds(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[10] = {0};
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                       &v[5], &v[6], &v[7], &v[8], &v[9])
              : 0;
    if (f)
        fclose(f);
    if (n < 8)
        return 0;
    unsigned long long busy = 0;
    for (int i = 0; i < 8; i++)
        if (i != 3 && i != 4)
            busy += v[i];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static void *relay_copy(void *arg)
{
    relay_arg *r = arg;
    char *b = malloc(256 * 1024);
    for (ssize_t n; b && (n = recv(r->from, b, 256 * 1024, 0)) > 0;)
        for (ssize_t o = 0, w; o < n; o += w)
            if ((w = send(r->to, b + o, (size_t)(n - o), MSG_NOSIGNAL)) <= 0)
                goto out;
    shutdown(r->to, SHUT_WR);
out:
    free(b);
    return NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One transfer in mode m: MiB/s (*complete says whether every byte came
 * before the deadline; *cpu gets the host's busy CPU seconds per GiB),
 * -1 when the mode is refused. */
static double run(int m, bool *complete, double *cpu)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 8) < 0) {
        perror("egress-hop: listen");
        exit(1);
    }
    int s, c, a = -1, b = -1, map = -1, target = -1;
    pthread_t ts, tr;
    bool relaying = false;
    relay_arg ra;
    if (m == M_DIRECT) {
        pair(l, &c, &s);
        if (rcvbuf)
            setsockopt(c, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    } else {
        pair(l, &a, &s); /* a: the relay's side towards the server */
        pair(l, &c, &b); /* b: the relay's side towards the client c */
        if (rcvbuf)
            setsockopt(c, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
        if (m == M_SPLICE || m == M_COPY || m == M_MSG) {
            if (m == M_MSG) {
                /* the key: b's remote port as sk_msg_md shows it (network
                 * order in the upper 16 bits), i.e. c's local port */
                struct sockaddr_in cs;
                socklen_t csl = sizeof cs;
                getsockname(c, (struct sockaddr *)&cs, &csl);
                map = msg_maps(&target);
                if (map < 0 || put4(target, (uint32_t)cs.sin_port << 16, c) < 0 || put4(map, 0, b) < 0) {
                    if (map >= 0)
                        close(map), close(target);
                    close(a), close(b), close(c), close(s), close(l);
                    return -1;
                }
            }
            ra = (relay_arg){a, b};
            relaying = pthread_create(&tr, NULL, m == M_SPLICE ? relay : relay_copy, &ra) == 0;
        } else {
            int to = m == M_SOCKMAP ? b : c;
            map = sockhash(m == M_INGRESS ? BPF_F_INGRESS : 0);
            if (map < 0 || put(map, cookie(a), to) < 0 || put(map, cookie(to), a) < 0) {
                double refused = -1;
                if (map >= 0)
                    close(map);
                close(a), close(b), close(c), close(s), close(l);
                return refused;
            }
        }
    }
    struct timeval tv = {2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static char buf[1 << 20];
    long got = 0;
    double b0 = busy_seconds(), t0 = now(), t1 = t0;
    pthread_create(&ts, NULL, server, (void *)(intptr_t)s);
    while (got < total) {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += n;
        t1 = now();
        if (t1 - t0 > 10)
            break;
    }
    *cpu = got ? (busy_seconds() - b0) / ((double)got / (1 << 30)) : 0;
    /* a stalled mode leaves the server blocked: closing its peers ends it */
    shutdown(c, SHUT_RDWR);
    if (a >= 0)
        shutdown(a, SHUT_RDWR);
    if (b >= 0)
        shutdown(b, SHUT_RDWR);
    shutdown(s, SHUT_RDWR);
    pthread_join(ts, NULL);
    if (relaying)
        pthread_join(tr, NULL);
    if (map >= 0)
        close(map);
    if (target >= 0)
        close(target);
    close(c), close(s), close(l);
    if (a >= 0)
        close(a), close(b);
    *complete = got == total;
    return t1 > t0 ? (double)got / 1048576.0 / (t1 - t0) : 0;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    long mib = argc > 1 ? atol(argv[1]) : 1000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    rcvbuf = argc > 3 ? atoi(argv[3]) : 0;
    if (mib <= 0 || rounds <= 0 || rounds > 100 || rcvbuf < 0) {
        fprintf(stderr, "usage: egress-hop [SIZE_MIB [ROUNDS [RCVBUF]]]\n");
        return 2;
    }
    total = mib << 20;
    memset(chunk, 0xa5, sizeof chunk);
    double r[M_COUNT][100], cpu[M_COUNT][100];
    bool refused[M_COUNT] = {false};
    int incomplete[M_COUNT] = {0};
    for (int i = 0; i < rounds; i++)
        for (int m = 0; m < M_COUNT; m++) {
            bool complete = true;
            cpu[m][i] = 0;
            r[m][i] = refused[m] ? -1 : run(m, &complete, &cpu[m][i]);
            refused[m] = r[m][i] < 0;
            incomplete[m] += !complete && !refused[m];
        }
    double med[M_COUNT], med_cpu[M_COUNT];
    for (int m = 0; m < M_COUNT; m++) {
        qsort(r[m], (size_t)rounds, sizeof r[m][0], cmp);
        qsort(cpu[m], (size_t)rounds, sizeof cpu[m][0], cmp);
        med[m] = r[m][rounds / 2];
        med_cpu[m] = cpu[m][rounds / 2];
    }
    printf("relayed loopback TCP, %ld MiB, %d rounds, client SO_RCVBUF %s\n", mib, rounds, rcvbuf ? argv[3] : "autotuned");
    printf("mode           median MiB/s  vs direct  host CPU-s per GiB\n");
    for (int m = 0; m < M_COUNT; m++) {
        if (refused[m]) {
            printf("%-10s refused by the kernel (needs root or CAP_BPF + CAP_NET_ADMIN)\n", names[m]);
            continue;
        }
        printf("%-10s %17.0f %9.2fx %19.2f", names[m], med[m], med[m] / med[M_DIRECT], med_cpu[m]);
        if (incomplete[m])
            printf("   (%d of %d rounds incomplete: stopped at 10 s or a 2 s stall)", incomplete[m], rounds);
        printf("\n");
    }
    return 0;
}
