/*
 * metrics.c - counters for /metrics in the Prometheus text format
 * (internal.h, core.h).
 *
 * Adapters count their requests here; core counts sandboxes and execs.
 * Rendering is behind an admin-only check (audit_read.c): the numbers span
 * every team.
 *
 * Requests are counted by route pattern (never by raw URL, which would let
 * callers create unbounded label values) and status.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "sandbox/pool.h"

#define MAX_SERIES 256
static const double exec_buckets[] = {0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
#define NBUCKETS (sizeof exec_buckets / sizeof exec_buckets[0])

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct { char route[64]; int status; uint64_t n; } requests[MAX_SERIES];
static size_t nrequests;
static uint64_t auth_failures, created_ok, created_error, created_denied;
static uint64_t exec_count, exec_bucket[NBUCKETS];
static double exec_sum;

void fb_core_metrics_request(const char *route, int status)
{
    pthread_mutex_lock(&lock);
    size_t i;
    for (i = 0; i < nrequests; i++)
        if (requests[i].status == status && strcmp(requests[i].route, route) == 0)
            break;
    if (i == nrequests && nrequests < MAX_SERIES) {
        snprintf(requests[i].route, sizeof requests[i].route, "%s", route);
        requests[i].status = status;
        nrequests++;
    }
    if (i < nrequests)
        requests[i].n++;
    pthread_mutex_unlock(&lock);
}

void fb_core_metrics_auth_failure(void)
{
    pthread_mutex_lock(&lock);
    auth_failures++;
    pthread_mutex_unlock(&lock);
}

void core_metrics_sandbox_created(const char *outcome)
{
    pthread_mutex_lock(&lock);
    if (strcmp(outcome, "ok") == 0)
        created_ok++;
    else if (strcmp(outcome, "denied") == 0)
        created_denied++;
    else
        created_error++;
    pthread_mutex_unlock(&lock);
}

void core_metrics_exec_duration(double seconds)
{
    pthread_mutex_lock(&lock);
    exec_count++;
    exec_sum += seconds;
    for (size_t i = 0; i < NBUCKETS; i++)
        if (seconds <= exec_buckets[i])
            exec_bucket[i]++;
    pthread_mutex_unlock(&lock);
}

char *core_metrics_render(core_registry *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    fprintf(f, "# HELP forgebox_sandboxes_active Live sandboxes by backend.\n"
               "# TYPE forgebox_sandboxes_active gauge\n");
    fprintf(f, "forgebox_sandboxes_active{backend=\"vm\"} %zu\n", core_registry_count(r, "vm"));
    fprintf(f, "forgebox_sandboxes_active{backend=\"jail\"} %zu\n", core_registry_count(r, "jail"));
    pthread_mutex_lock(&lock);
    fprintf(f, "# HELP forgebox_sandboxes_created_total Sandbox creations by outcome.\n"
               "# TYPE forgebox_sandboxes_created_total counter\n"
               "forgebox_sandboxes_created_total{outcome=\"ok\"} %llu\n"
               "forgebox_sandboxes_created_total{outcome=\"denied\"} %llu\n"
               "forgebox_sandboxes_created_total{outcome=\"error\"} %llu\n",
            (unsigned long long)created_ok, (unsigned long long)created_denied,
            (unsigned long long)created_error);
    fprintf(f, "# HELP forgebox_exec_duration_seconds Duration of execs.\n"
               "# TYPE forgebox_exec_duration_seconds histogram\n");
    for (size_t i = 0; i < NBUCKETS; i++)
        fprintf(f, "forgebox_exec_duration_seconds_bucket{le=\"%g\"} %llu\n", exec_buckets[i],
                (unsigned long long)exec_bucket[i]);
    fprintf(f, "forgebox_exec_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
               "forgebox_exec_duration_seconds_sum %.6f\n"
               "forgebox_exec_duration_seconds_count %llu\n",
            (unsigned long long)exec_count, exec_sum, (unsigned long long)exec_count);
    fprintf(f, "# HELP forgebox_http_requests_total Requests by route and status.\n"
               "# TYPE forgebox_http_requests_total counter\n");
    for (size_t i = 0; i < nrequests; i++)
        fprintf(f, "forgebox_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", requests[i].route,
                requests[i].status, (unsigned long long)requests[i].n);
    fprintf(f, "# HELP forgebox_auth_failures_total Failed authentications.\n"
               "# TYPE forgebox_auth_failures_total counter\n"
               "forgebox_auth_failures_total %llu\n",
            (unsigned long long)auth_failures);
    pthread_mutex_unlock(&lock);
    fb_pool_metrics(f);
    fclose(f);
    return buf;
}
