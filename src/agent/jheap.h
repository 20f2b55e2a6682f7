/*
 * jheap.h - the agent's allocator for jansson: freed blocks of up to
 * 4 KiB kept for reuse instead of going back to musl's malloc, which
 * unmaps emptied groups (jheap.c says why).
 */
#ifndef FB_AGENT_JHEAP_H
#define FB_AGENT_JHEAP_H

#include <stddef.h>

/* Makes jansson allocate through it; before any json_t is made. */
void fb_jheap_install(void);

/* The same blocks for the agent's own short-lived allocations (an exec's
 * environment, exec.c); fb_jheap_free only on what fb_jheap_alloc gave. */
void *fb_jheap_alloc(size_t n);
void fb_jheap_free(void *p);

#endif
