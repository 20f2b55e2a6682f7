/*
 * audit_cmd.c - `forgebox audit verify` and `forgebox audit export`.
 *
 * Both read the state directory's database beside a running server (WAL
 * lets them); neither creates a state directory or a database that is not
 * there, so a mistyped --state-dir is an error, not an empty, "intact" log.
 * --store URL (or FORGEBOX_STORE_URL) reads a shared PostgreSQL store
 * instead; the state directory still provides the audit key.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "audit/audit.h"
#include "cli/cli.h"
#include "store/store.h"

static int usage(void)
{
    fprintf(stderr, "usage: forgebox audit verify [--state-dir DIR] [--store URL]\n"
                    "       forgebox audit export [--state-dir DIR] [--store URL]\n");
    return FB_EXIT_USAGE;
}

static int open_existing(const char *dir, const char *url, fb_store **st, fb_err *err)
{
    char path[4096];
    struct stat sb;
    if (url && strncmp(url, "sqlite:", 7) != 0) {
        /* A shared database: the state directory holds the audit key. */
        if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode))
            return fb_fail(err, "no state directory %s (it holds the audit key; is --state-dir right?)", dir);
        return fb_store_open_url(dir, url, st, err);
    }
    if (snprintf(path, sizeof path, "%s/forgebox.db", dir) >= (int)sizeof path)
        return fb_fail(err, "state directory path too long");
    if (stat(path, &sb) < 0) {
        if (errno == ENOENT)
            return fb_fail(err, "no ForgeBox database at %s (is --state-dir or FORGEBOX_STATE_DIR right?)", path);
        return fb_fail_errno(err, "cannot stat %s", path);
    }
    return fb_store_open_url(dir, url, st, err);
}

int fb_cmd_audit(int argc, char **argv)
{
    const char *flag = NULL;
    if (argc < 2)
        return usage();
    const char *verb = argv[1];
    const char *store_flag = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc)
            flag = argv[++i];
        else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store_flag = argv[++i];
        else
            return usage();
    }
    bool verify = strcmp(verb, "verify") == 0;
    if (!verify && strcmp(verb, "export") != 0)
        return usage();

    fb_err err = {{0}};
    fb_store *st = NULL;
    if (open_existing(fb_cli_state_dir(flag), fb_cli_store_url(store_flag), &st, &err) < 0) {
        fprintf(stderr, "forgebox: audit %s: %s\n", verb, err.msg);
        return 1;
    }
    int rc;
    if (verify) {
        uint64_t entries = 0, bad = 0;
        rc = fb_audit_verify(st, &entries, &bad, &err);
        if (rc == 0)
            printf("audit chain intact: %llu entries\n", (unsigned long long)entries);
    } else {
        rc = fb_audit_export(st, stdout, &err);
    }
    fb_store_close(st);
    if (rc < 0) {
        fprintf(stderr, "forgebox: audit %s: %s\n", verb, err.msg);
        return 1;
    }
    if (fflush(stdout) == EOF) {
        fprintf(stderr, "forgebox: audit %s: cannot write the output: %s\n", verb, strerror(errno));
        return 1;
    }
    return 0;
}
