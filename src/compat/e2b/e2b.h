/*
 * e2b.h - the E2B-compatible listener: the control API and the in-sandbox
 * API ("envd", and the code interpreter's /execute) that the unmodified
 * E2B SDKs call, served on the service layer (src/core) beside the native
 * gateway.  Off unless `e2b.listen` is set; docs/e2b.md says what works.
 */
#ifndef FB_E2B_H
#define FB_E2B_H

#include "gateway/gateway.h"

/* Run by `forgebox serve` with fb_gateway_run_with when e2b.listen is set. */
extern const fb_gateway_companion fb_e2b_companion;

#endif
