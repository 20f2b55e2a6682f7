/*
 * fb_api_bench.c - the exec round trip through the API beside the same
 * exec over the agent channel, both timed from C, in one process, in
 * interleaved blocks (bench/api_exec.py drives it).
 *
 *   fb-api-bench ROUNDS PER_ROUND [HOST:PORT KEY SANDBOX_ID]...
 *
 * Each round runs PER_ROUND execs of /bin/true over the agent channel of a
 * jail of its own (the public sandbox.h API, as fb-bench and the gateway
 * use it), then PER_ROUND `POST /v1/sandboxes/{id}/exec` on each gateway
 * given, in an order that rotates every round, so that a change in the
 * host's load falls on every row alike.  The HTTP client is a plain
 * keep-alive socket (one connection per gateway, TCP_NODELAY, no
 * library): what it adds to a round trip is a write and a read, as small
 * as a client can make it, so the difference to the agent channel is the
 * gateway's own.  Prints one JSON object: for every row the median and the
 * 10th/90th percentiles in microseconds, and the median of each round.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/sandbox.h"

#define MAX_GW 4

typedef struct gw {
    char host[64];
    int port;
    const char *key, *sandbox;
    int fd;
    char req[1024];
    size_t req_len;
    uint64_t *t;
} gw;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what)
{
    fprintf(stderr, "fb-api-bench: %s\n", what);
    exit(1);
}

static int connect_to(const gw *g)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g->port)};
    if (fd < 0 || inet_pton(AF_INET, g->host, &a.sin_addr) != 1 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("cannot connect to the gateway");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One exec through the API; exits the program on anything but a 200 whose
 * body says exit_code 0 (a benchmark of failures measures nothing). */
static void api_exec(gw *g)
{
    if (g->fd < 0)
        g->fd = connect_to(g);
    for (size_t off = 0; off < g->req_len;) {
        ssize_t n = write(g->fd, g->req + off, g->req_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("write to the gateway failed");
        off += (size_t)n;
    }
    static char buf[65536];
    size_t len = 0, need = 0;
    char *body = NULL;
    for (;;) {
        if (len >= sizeof buf - 1)
            die("answer too large");
        ssize_t n = read(g->fd, buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("the gateway closed the connection");
        len += (size_t)n;
        buf[len] = '\0';
        if (!body) {
            char *end = strstr(buf, "\r\n\r\n");
            if (!end)
                continue;
            body = end + 4;
            *end = '\0';
            if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
                fprintf(stderr, "fb-api-bench: %s\n", buf);
                die("the exec was not answered 200");
            }
            char *cl = strcasestr(buf, "\r\nContent-Length:");
            if (!cl)
                die("the answer has no Content-Length");
            need = (size_t)(body - buf) + strtoul(cl + 17, NULL, 10);
        }
        if (len >= need)
            break;
    }
    buf[need] = '\0';
    if (!strstr(body, "\"exit_code\":0"))
        die("the exec did not exit 0");
}

static fb_sandbox *make_jail(void)
{
    fb_sandbox_config cfg;
    fb_sandbox_config_defaults(&cfg);
    cfg.backend = FB_BACKEND_JAIL;
    cfg.image_dir = getenv("FORGEBOX_IMAGE") ? getenv("FORGEBOX_IMAGE") : "build/image";
    if (getenv("FORGEBOX_STATE_DIR"))
        cfg.state_dir = getenv("FORGEBOX_STATE_DIR");
    if (getenv("FORGEBOX_RUN_DIR"))
        cfg.run_dir = getenv("FORGEBOX_RUN_DIR");
    fb_sandbox *sb;
    fb_err err = {{0}};
    if (fb_sandbox_create(&cfg, &sb, &err) < 0) {
        fprintf(stderr, "fb-api-bench: %s\n", err.msg);
        exit(1);
    }
    return sb;
}

static void direct_exec(fb_sandbox *sb)
{
    const char *argv[] = {"/bin/true", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 10000, .stdin_fd = -1};
    fb_exec_result res;
    fb_err err = {{0}};
    if (fb_sandbox_exec(sb, &req, &res, &err) < 0 || !res.started || res.exit_code != 0) {
        fprintf(stderr, "fb-api-bench: exec failed: %s\n", err.msg);
        exit(1);
    }
}

/* A row: its percentiles, and the median of each round (in round order),
 * so that a driver can pair the rows round by round. */
static void print_row(const char *name, uint64_t *t, size_t rounds, size_t per, bool comma)
{
    size_t n = rounds * per;
    printf("\"%s\": {\"rounds_us\": [", name);
    for (size_t r = 0; r < rounds; r++) {
        qsort(t + r * per, per, sizeof *t, cmp_u64);
        printf("%s%.1f", r ? ", " : "", t[r * per + per / 2] / 1e3);
    }
    qsort(t, n, sizeof *t, cmp_u64);
    printf("], \"median_us\": %.1f, \"p10_us\": %.1f, \"p90_us\": %.1f}%s", t[n / 2] / 1e3, t[n / 10] / 1e3,
           t[n * 9 / 10] / 1e3, comma ? ", " : "");
}

int main(int argc, char **argv)
{
    if (argc < 3 || (argc - 3) % 3 != 0 || (argc - 3) / 3 > MAX_GW) {
        fprintf(stderr, "usage: fb-api-bench ROUNDS PER_ROUND [HOST:PORT KEY SANDBOX_ID]... (at most %d)\n",
                MAX_GW);
        return 2;
    }
    int rounds = atoi(argv[1]), per = atoi(argv[2]);
    if (rounds < 1 || per < 1 || rounds > 10000 || per > 10000)
        die("ROUNDS and PER_ROUND must be 1 to 10000");
    size_t total = (size_t)rounds * (size_t)per;
    int ngw = (argc - 3) / 3;
    gw g[MAX_GW];
    memset(g, 0, sizeof g);
    for (int i = 0; i < ngw; i++) {
        const char *hp = argv[3 + 3 * i];
        const char *colon = strrchr(hp, ':');
        if (!colon || (size_t)(colon - hp) >= sizeof g[i].host)
            die("HOST:PORT expected");
        memcpy(g[i].host, hp, (size_t)(colon - hp));
        g[i].port = atoi(colon + 1);
        g[i].key = argv[4 + 3 * i];
        g[i].sandbox = argv[5 + 3 * i];
        g[i].fd = -1;
        static const char body[] = "{\"cmd\":[\"/bin/true\"]}";
        int n = snprintf(g[i].req, sizeof g[i].req,
                         "POST /v1/sandboxes/%s/exec HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                         g[i].sandbox, hp, g[i].key, sizeof body - 1, body);
        if (n < 0 || (size_t)n >= sizeof g[i].req)
            die("request too long");
        g[i].req_len = (size_t)n;
        g[i].t = calloc(total, sizeof *g[i].t);
        if (!g[i].t)
            die("out of memory");
    }
    uint64_t *direct = calloc(total, sizeof *direct);
    if (!direct)
        die("out of memory");
    fb_sandbox *sb = make_jail();
    direct_exec(sb); /* warm: the first exec reads the shell's pages */
    for (int i = 0; i < ngw; i++)
        api_exec(&g[i]);
    size_t k = 0;
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j <= ngw; j++) {
            int which = (j + r) % (ngw + 1); /* ngw: the agent channel */
            for (int q = 0; q < per; q++) {
                uint64_t t0 = now_ns();
                if (which == ngw)
                    direct_exec(sb);
                else
                    api_exec(&g[which]);
                uint64_t dt = now_ns() - t0;
                if (which == ngw)
                    direct[k + (size_t)q] = dt;
                else
                    g[which].t[k + (size_t)q] = dt;
            }
        }
        k += (size_t)per;
    }
    fb_sandbox_destroy(sb);
    printf("{");
    print_row("direct", direct, (size_t)rounds, (size_t)per, ngw > 0);
    for (int i = 0; i < ngw; i++) {
        char name[16];
        snprintf(name, sizeof name, "api%d", i);
        print_row(name, g[i].t, (size_t)rounds, (size_t)per, i + 1 < ngw);
        close(g[i].fd);
        free(g[i].t);
    }
    printf("}\n");
    free(direct);
    return 0;
}
