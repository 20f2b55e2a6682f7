/*
 * ca_cmd.c - `forgebox ca init|issue|revoke|list`: the organisation CA's
 * verbs (src/ca, docs/certificates.md).
 *
 * The CLI only parses and prints; every decision (refusing to replace a
 * CA or a key, what a certificate carries) is src/ca's.  Exit codes: 0,
 * FB_EXIT_USAGE for bad arguments, 1 for a refusal or a failure, with the
 * reason on stderr.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/ca.h"
#include "cli/cli.h"

#define MAX_SANS 16

static void ca_usage(FILE *out)
{
    fprintf(out,
            "usage: forgebox ca init --dir DIR [--org NAME] [--days N]\n"
            "       forgebox ca issue --dir DIR --role node|gateway --name NAME --out PREFIX [--days N]\n"
            "                         [--dns NAME]... [--ip ADDR]... [--backdate-days N | --postdate-days N]\n"
            "       forgebox ca revoke --dir DIR (--serial HEX | --name NAME) [--crl-days N]\n"
            "       forgebox ca list --dir DIR [--json]\n");
}

/* src/ca's messages already say which verb; `verb` only covers an empty one. */
static int fail(const char *verb, const fb_err *err)
{
    fprintf(stderr, "forgebox: %s\n", err->msg[0] ? err->msg : verb);
    return 1;
}

static int parse_days(const char *s, unsigned *out)
{
    uint64_t v;
    if (fb_parse_u64(s, 0, 36500, &v) < 0) {
        fprintf(stderr, "forgebox ca: a number of days must be 0-36500, got \"%.32s\"\n", s);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

struct ca_args {
    const char *dir, *org, *role, *name, *out, *serial;
    unsigned days, backdate, postdate, crl_days;
    bool days_set, json;
    const char *dns[MAX_SANS], *ips[MAX_SANS];
    size_t ndns, nips;
};

static int parse(int argc, char **argv, struct ca_args *a)
{
    static const struct option opts[] = {
        {"dir", required_argument, 0, 'd'},    {"org", required_argument, 0, 'o'},
        {"days", required_argument, 0, 'D'},   {"role", required_argument, 0, 'r'},
        {"name", required_argument, 0, 'n'},   {"out", required_argument, 0, 'O'},
        {"dns", required_argument, 0, 'N'},    {"ip", required_argument, 0, 'i'},
        {"serial", required_argument, 0, 's'}, {"backdate-days", required_argument, 0, 'b'},
        {"postdate-days", required_argument, 0, 'p'},
        {"crl-days", required_argument, 0, 'c'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->dir = optarg; break;
        case 'o': a->org = optarg; break;
        case 'r': a->role = optarg; break;
        case 'n': a->name = optarg; break;
        case 'O': a->out = optarg; break;
        case 's': a->serial = optarg; break;
        case 'j': a->json = true; break;
        case 'D':
            if (parse_days(optarg, &a->days) < 0)
                return -1;
            a->days_set = true;
            break;
        case 'b':
            if (parse_days(optarg, &a->backdate) < 0)
                return -1;
            break;
        case 'p':
            if (parse_days(optarg, &a->postdate) < 0)
                return -1;
            break;
        case 'c':
            if (parse_days(optarg, &a->crl_days) < 0)
                return -1;
            break;
        case 'N':
        case 'i': {
            size_t *n = c == 'N' ? &a->ndns : &a->nips;
            const char **v = c == 'N' ? a->dns : a->ips;
            if (*n >= MAX_SANS) {
                fprintf(stderr, "forgebox ca issue: at most %d --dns and %d --ip\n", MAX_SANS, MAX_SANS);
                return -1;
            }
            v[(*n)++] = optarg;
            break;
        }
        case 'h':
            ca_usage(stdout);
            return 1;
        default:
            ca_usage(stderr);
            return -1;
        }
    }
    if (optind != argc || !a->dir) {
        fprintf(stderr, "forgebox ca: --dir DIR is required (and no other arguments)\n");
        return -1;
    }
    return 0;
}

static int cmd_issue(struct ca_args *a)
{
    int role = fb_ca_role_from_name(a->role);
    if (role < 0 || !a->name || !a->out) {
        fprintf(stderr, "forgebox ca issue: --role node|gateway, --name NAME and --out PREFIX are required\n");
        return FB_EXIT_USAGE;
    }
    fb_ca_issue_req req = {
        .role = (fb_ca_role)role, .name = a->name, .days = a->days_set ? a->days : 365,
        .backdate_days = a->backdate, .postdate_days = a->postdate, .dns = a->dns, .ndns = a->ndns, .ips = a->ips, .nips = a->nips,
    };
    fb_err err = {{0}};
    char serial[64];
    if (fb_ca_issue(a->dir, &req, a->out, serial, sizeof serial, &err) < 0)
        return fail("issue", &err);
    printf("issued %s %s serial %s: %s.crt %s.key\n", a->role, a->name, serial, a->out, a->out);
    return 0;
}

static int cmd_list(struct ca_args *a)
{
    fb_err err = {{0}};
    fb_ca_record *v = NULL;
    size_t n = 0;
    if (fb_ca_list(a->dir, &v, &n, &err) < 0)
        return fail("list", &err);
    time_t now = time(NULL);
    if (!a->json)
        printf("%-32s  %-8s  %-24s  %-20s  %s\n", "SERIAL", "ROLE", "NAME", "NOT_AFTER", "STATE");
    for (size_t i = 0; i < n; i++) {
        char when[32];
        time_t t = (time_t)v[i].not_after;
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        const char *state = v[i].revoked ? "revoked" : t <= now ? "expired" : "valid";
        if (a->json)
            printf("{\"serial\":\"%s\",\"role\":\"%s\",\"name\":\"%s\",\"not_after\":\"%s\",\"state\":\"%s\"}\n",
                   v[i].serial, fb_ca_role_name(v[i].role), v[i].name, when, state);
        else
            printf("%-32s  %-8s  %-24s  %-20s  %s\n", v[i].serial, fb_ca_role_name(v[i].role), v[i].name, when,
                   state);
    }
    free(v);
    return 0;
}

int fb_cmd_ca(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        ca_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? FB_EXIT_USAGE : 0;
    }
    const char *verb = argv[1];
    struct ca_args a = {0};
    int p = parse(argc - 1, argv + 1, &a);
    if (p != 0)
        return p > 0 ? 0 : FB_EXIT_USAGE;
    fb_err err = {{0}};
    if (strcmp(verb, "init") == 0) {
        if (fb_ca_init(a.dir, a.org ? a.org : "forgebox", a.days_set ? a.days : 3650, &err) < 0)
            return fail("init", &err);
        printf("created the CA in %s: ca.crt, ca.key (0600), crl.pem\n", a.dir);
        return 0;
    }
    if (strcmp(verb, "issue") == 0)
        return cmd_issue(&a);
    if (strcmp(verb, "revoke") == 0) {
        if ((a.serial == NULL) == (a.name == NULL)) {
            fprintf(stderr, "forgebox ca revoke: give exactly one of --serial HEX and --name NAME\n");
            return FB_EXIT_USAGE;
        }
        size_t count = 0;
        if (fb_ca_revoke(a.dir, a.serial, a.name, a.crl_days ? a.crl_days : 30, &count, &err) < 0)
            return fail("revoke", &err);
        printf("revoked %zu certificate(s); %s/crl.pem re-signed\n", count, a.dir);
        return 0;
    }
    if (strcmp(verb, "list") == 0)
        return cmd_list(&a);
    fprintf(stderr, "forgebox ca: unknown verb '%.32s'\n", verb);
    ca_usage(stderr);
    return FB_EXIT_USAGE;
}
