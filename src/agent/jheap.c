/*
 * jheap.c - jansson's allocations in the agent, kept for reuse (jheap.h).
 *
 * Every frame the agent reads or writes is a jansson tree and a string:
 * a request decoded, its answer encoded, all freed again.  musl's malloc
 * (mallocng, AGENT_LIBC=musl) hands a size class's group back to the
 * kernel once its last block is freed, so an exec's frames went through
 * mmap, a page fault on the fresh page and munmap several times per exec
 * (strace of a jail's agent: 2 mmaps and 3 munmaps of 4 KiB between a
 * request and its exit frame), each a TLB flush and a fault: ~40 us a
 * fault in a VM under TCG (bench/README.md, "Session 8: VM exec", second
 * round).  Here a freed block of up to 4 KiB goes onto a free list of its
 * size (powers of two), at most JHEAP_KEEP per size, and the next
 * allocation of that size takes it: the agent's frames settle on the same
 * few blocks.  Larger blocks go straight back to malloc.  An exec's
 * environment (exec.c, build_env) is allocated here too.
 *
 * Single-threaded by construction: the agent starts no thread (Makefile
 * checks), and its spawned child, which shares its memory until execve,
 * never allocates (exec.c, spawn_process).
 */
#include "agent/jheap.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#define JHEAP_HDR 16u /* keeps malloc's 16-byte alignment */
#define JHEAP_CLASSES 8u /* 32 B .. 4 KiB with the header */
#define JHEAP_LARGE 0xffu
#define JHEAP_KEEP 16u

struct jheap_block {
    struct jheap_block *next; /* while on a free list */
};

static struct jheap_block *free_list[JHEAP_CLASSES];
static unsigned free_count[JHEAP_CLASSES];

void *fb_jheap_alloc(size_t n)
{
    if (n > SIZE_MAX - JHEAP_HDR)
        return NULL;
    size_t need = n + JHEAP_HDR;
    unsigned k = 0;
    while (k < JHEAP_CLASSES && (32u << k) < need)
        k++;
    uint8_t *b;
    if (k == JHEAP_CLASSES) {
        b = malloc(need);
    } else if (free_list[k]) {
        b = (uint8_t *)free_list[k];
        free_list[k] = free_list[k]->next;
        free_count[k]--;
    } else {
        b = malloc(32u << k);
    }
    if (!b)
        return NULL;
    /* The class, in the header (a free list's link overwrote it). */
    b[0] = (uint8_t)(k == JHEAP_CLASSES ? JHEAP_LARGE : k);
    return b + JHEAP_HDR;
}

void fb_jheap_free(void *p)
{
    if (!p)
        return;
    uint8_t *b = (uint8_t *)p - JHEAP_HDR;
    unsigned k = b[0];
    if (k < JHEAP_CLASSES && free_count[k] < JHEAP_KEEP) {
        struct jheap_block *blk = (struct jheap_block *)b;
        blk->next = free_list[k];
        free_list[k] = blk;
        free_count[k]++;
        return;
    }
    free(b);
}

void fb_jheap_install(void)
{
    json_set_alloc_funcs(fb_jheap_alloc, fb_jheap_free);
}
