/*
 * ratelimit.h - token buckets: per API key and per user for requests,
 * and the failed-authentication gate.
 *
 * No libmicrohttpd here; the clock is a parameter (the *_at forms) so the
 * unit tests can run time forward.
 *
 * The failure gate answers the question "may this source write one more
 * anonymous audit entry?".  A budget per source alone is not enough: an
 * IPv6 host owns at least a /64 and can rotate through 2^64 addresses,
 * and the bucket table is bounded, so rotating addresses would each find
 * a full bucket.  So failures are charged three times, and the first
 * empty bucket refuses: the address's (IPv4) or the /64's (IPv6; an IPv4
 * address mapped into IPv6 counts as IPv4), and one global bucket for
 * everybody, sized at GW_FAIL_GLOBAL_FACTOR sources' worth.  Beyond the
 * budget the gateway answers 429 without writing to the log.
 */
#ifndef FB_GW_RATELIMIT_H
#define FB_GW_RATELIMIT_H

#include <stdint.h>

typedef struct gw_ratelimit gw_ratelimit;
gw_ratelimit *gw_ratelimit_new(double rate_per_s, double burst);
void gw_ratelimit_free(gw_ratelimit *rl);
/* 0 if allowed; otherwise the seconds to wait before retrying (>= 1). */
int gw_ratelimit_take(gw_ratelimit *rl, const char *key);
int gw_ratelimit_take_at(gw_ratelimit *rl, const char *key, uint64_t now_ns);

#define GW_FAIL_GLOBAL_FACTOR 8

typedef struct gw_failgate gw_failgate;
/* rate/burst: one source's budget of failed authentications. */
gw_failgate *gw_failgate_new(double rate_per_s, double burst);
void gw_failgate_free(gw_failgate *g);
/* The bucket a source address is charged to: "ip:<v4>", "net:<v6 /64>"
 * or "other:<text>" for anything unparsable.  out holds 64 bytes. */
void gw_failgate_source(const char *ip_text, char out[64]);
/* 0: the failure may be audited; otherwise seconds to wait (answer 429). */
int gw_failgate_take_at(gw_failgate *g, const char *ip_text, uint64_t now_ns);
int gw_failgate_take(gw_failgate *g, const char *ip_text);

#endif
