/*
 * memcpy.c - the agent's memcpy when it is built with musl (Makefile,
 * AGENT_LIBC).
 *
 * musl's x86-64 memcpy is `rep movsq` with `movsb` for the ragged ends:
 * microcoded string instructions with a start-up cost at every call, and
 * under TCG (a VM without KVM) a helper call per iteration.  The agent's
 * copies are mostly short (jansson's keys and strings, frame headers), so
 * that start-up is most of each: in a jail, musl's memcpy was ~6% of the
 * agent's CPU per exec where glibc's was under 0.5%, and an exec round
 * trip in a VM under TCG cost ~0.35 ms more (bench/README.md, "Session 7:
 * fb-agent on musl").  This one copies with overlapping unaligned 8- and
 * 16-byte moves, as glibc's does below its rep-movsb threshold.  memmove
 * is here too: musl's jumps into its memcpy's code (__memcpy_fwd), which
 * would bring that in beside this one.
 *
 * No <string.h>: tests/unit/test_agent_memcpy.c includes this file under
 * another name next to glibc's declarations.
 */
#include <stddef.h>
#include <stdint.h>

typedef uint16_t u16u __attribute__((may_alias, aligned(1)));
typedef uint32_t u32u __attribute__((may_alias, aligned(1)));
typedef uint64_t u64u __attribute__((may_alias, aligned(1)));
typedef long long v16u __attribute__((vector_size(16), may_alias, aligned(1)));

void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);

/* The forward copy, without `restrict`: memmove uses it for overlapping
 * buffers too, where a restrict-qualified memcpy would let the compiler
 * move the tail's loads below the loop's stores.  Not turned back into a
 * call to memcpy by the loop-pattern pass. */
__attribute__((optimize("no-tree-loop-distribute-patterns"), always_inline))
static inline void *copy_forward(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (n <= 16) {
        if (n >= 8) {
            uint64_t a = *(const u64u *)s, b = *(const u64u *)(s + n - 8);
            *(u64u *)d = a;
            *(u64u *)(d + n - 8) = b;
        } else if (n >= 4) {
            uint32_t a = *(const u32u *)s, b = *(const u32u *)(s + n - 4);
            *(u32u *)d = a;
            *(u32u *)(d + n - 4) = b;
        } else if (n >= 2) {
            uint16_t a = *(const u16u *)s, b = *(const u16u *)(s + n - 2);
            *(u16u *)d = a;
            *(u16u *)(d + n - 2) = b;
        } else if (n == 1) {
            *d = *s;
        }
        return dst;
    }
    if (n <= 32) {
        v16u a = *(const v16u *)s, b = *(const v16u *)(s + n - 16);
        *(v16u *)d = a;
        *(v16u *)(d + n - 16) = b;
        return dst;
    }
    /* The last 32 bytes are loaded first and stored last, over whatever
     * the loop's last round left short. */
    v16u t0 = *(const v16u *)(s + n - 32), t1 = *(const v16u *)(s + n - 16);
    for (size_t i = 0; i + 32 <= n; i += 32) {
        v16u a = *(const v16u *)(s + i), b = *(const v16u *)(s + i + 16);
        *(v16u *)(d + i) = a;
        *(v16u *)(d + i + 16) = b;
    }
    *(v16u *)(d + n - 32) = t0;
    *(v16u *)(d + n - 16) = t1;
    return dst;
}

__attribute__((optimize("no-tree-loop-distribute-patterns")))
void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    return copy_forward(dst, src, n);
}

/* memcpy's forward order is right for a destination below its source
 * (each round loads before it stores, and the tail was loaded first), and
 * so is any copy of up to 32 bytes (all loaded before any store); a
 * destination inside the source is copied from the end, the head loaded
 * first and stored last. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if ((uintptr_t)d - (uintptr_t)s >= n || n <= 32)
        return copy_forward(dst, src, n);
    v16u h0 = *(const v16u *)s, h1 = *(const v16u *)(s + 16);
    for (size_t i = n; i > 32; i -= 32) {
        v16u a = *(const v16u *)(s + i - 32), b = *(const v16u *)(s + i - 16);
        *(v16u *)(d + i - 32) = a;
        *(v16u *)(d + i - 16) = b;
    }
    *(v16u *)d = h0;
    *(v16u *)(d + 16) = h1;
    return dst;
}
