/*
 * say.h - private to src/policy: the two helpers every rule file shares.
 */
#ifndef FB_POLICY_SAY_H
#define FB_POLICY_SAY_H

#include "policy/policy.h"

/* Fills out (verdict and formatted reason) and returns v. */
fb_verdict fb_policy_say(fb_decision *out, fb_verdict v, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A principal whose role is known and whose admin flag agrees with it. */
bool fb_policy_consistent(const fb_principal *p);

#endif
