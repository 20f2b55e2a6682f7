/*
 * test_seccomp.c - the tool-process seccomp program that fb-agent loads
 * (build/gen/seccomp_bpf.h) against the rule list it comes from
 * (src/agent/seccomp_rules.c):
 *   - the generated header holds exactly what libseccomp builds from the
 *     rules now (a stale header or a hand edit fails here);
 *   - the program loaded (a search over ranges of syscall numbers) gives,
 *     for every input tried, the verdict of the reference program that
 *     libseccomp builds from the same rules, and both give the verdict
 *     of the two libseccomp filters the reference joins, stacked (the
 *     kernel's rule: the most restrictive action of all filters, the
 *     newest on a tie);
 *   - the refusals the contract names, one by one, with exact verdicts.
 * The programs are run by a small classic-BPF interpreter below (the
 * kernel's semantics for the instructions seccomp accepts).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>

#include "agent/seccomp_rules.h"
#include "seccomp_bpf.h"

#define ARCH_X86_64 AUDIT_ARCH_X86_64
#define ARCH_I386 AUDIT_ARCH_I386
#define X32_BIT 0x40000000u
#define RET_EPERM (SECCOMP_RET_ERRNO | EPERM)
#define RET_ENOSYS (SECCOMP_RET_ERRNO | ENOSYS)

/* Runs prog on d; fails the test on anything the kernel would refuse to
 * load or run (unknown opcode, jump out of the program, no return). */
static uint32_t run(const struct sock_filter *prog, unsigned len, const struct seccomp_data *d)
{
    uint32_t A = 0, X = 0, M[BPF_MEMWORDS] = {0};
    const unsigned char *data = (const unsigned char *)d;
    for (unsigned pc = 0; pc < len; pc++) {
        const struct sock_filter *f = &prog[pc];
        uint32_t src = BPF_SRC(f->code) == BPF_X ? X : f->k;
        switch (BPF_CLASS(f->code)) {
        case BPF_LD:
            if (f->code == (BPF_LD | BPF_W | BPF_ABS)) {
                assert_true(f->k % 4 == 0 && f->k + 4 <= sizeof *d);
                memcpy(&A, data + f->k, 4);
            } else if (f->code == (BPF_LD | BPF_IMM))
                A = f->k;
            else if (f->code == (BPF_LD | BPF_MEM) && f->k < BPF_MEMWORDS)
                A = M[f->k];
            else
                fail_msg("unsupported load 0x%x at %u", f->code, pc);
            break;
        case BPF_LDX:
            if (f->code == (BPF_LDX | BPF_IMM))
                X = f->k;
            else if (f->code == (BPF_LDX | BPF_MEM) && f->k < BPF_MEMWORDS)
                X = M[f->k];
            else
                fail_msg("unsupported ldx 0x%x at %u", f->code, pc);
            break;
        case BPF_ST:
            assert_true(f->k < BPF_MEMWORDS);
            M[f->k] = A;
            break;
        case BPF_STX:
            assert_true(f->k < BPF_MEMWORDS);
            M[f->k] = X;
            break;
        case BPF_ALU:
            switch (BPF_OP(f->code)) {
            case BPF_ADD: A += src; break;
            case BPF_SUB: A -= src; break;
            case BPF_MUL: A *= src; break;
            case BPF_DIV: assert_true(src != 0); A /= src; break;
            case BPF_OR: A |= src; break;
            case BPF_AND: A &= src; break;
            case BPF_LSH: A = src < 32 ? A << src : 0; break;
            case BPF_RSH: A = src < 32 ? A >> src : 0; break;
            case BPF_NEG: A = -A; break;
            default: fail_msg("unsupported alu 0x%x at %u", f->code, pc);
            }
            break;
        case BPF_JMP: {
            if (BPF_OP(f->code) == BPF_JA) {
                assert_true(pc + 1 + (uint64_t)f->k < len);
                pc += f->k;
                break;
            }
            bool t = false;
            switch (BPF_OP(f->code)) {
            case BPF_JEQ: t = A == src; break;
            case BPF_JGT: t = A > src; break;
            case BPF_JGE: t = A >= src; break;
            case BPF_JSET: t = (A & src) != 0; break;
            default: fail_msg("unsupported jump 0x%x at %u", f->code, pc);
            }
            unsigned off = t ? f->jt : f->jf;
            assert_true(pc + 1 + off < len);
            pc += off;
            break;
        }
        case BPF_RET:
            return BPF_RVAL(f->code) == BPF_A ? A : f->k;
        case BPF_MISC:
            if (BPF_MISCOP(f->code) == BPF_TAX)
                X = A;
            else
                A = X;
            break;
        default:
            fail_msg("unsupported class 0x%x at %u", f->code, pc);
        }
    }
    fail_msg("the program ran off its end");
    return 0;
}

/* The kernel's verdict for filters stacked in load order: every filter
 * runs, newest first; an action lower as a signed number wins, the first
 * seen (the newest) on a tie (kernel/seccomp.c, seccomp_run_filters). */
static uint32_t stacked(const struct sock_filter *first, unsigned first_len,
                        const struct sock_filter *newest, unsigned newest_len, const struct seccomp_data *d)
{
    uint32_t ret = run(newest, newest_len, d);
    uint32_t cur = run(first, first_len, d);
    if ((int32_t)(cur & SECCOMP_RET_ACTION_FULL) < (int32_t)(ret & SECCOMP_RET_ACTION_FULL))
        ret = cur;
    return ret;
}

typedef struct variant {
    bool inet;
    const struct sock_filter *gen;
    unsigned gen_len;
} variant;

static const variant variants[2] = {
    {false, fb_seccomp_plain, sizeof fb_seccomp_plain / sizeof fb_seccomp_plain[0]},
    {true, fb_seccomp_inet, sizeof fb_seccomp_inet / sizeof fb_seccomp_inet[0]},
};

static void test_header_is_what_the_rules_build(void **state)
{
    (void)state;
    for (int v = 0; v < 2; v++) {
        struct sock_filter *prog = NULL;
        unsigned short len = 0;
        fb_err err = {{0}};
        assert_int_equal(fb_seccomp_build_single(variants[v].inet, &prog, &len, &err), 0);
        assert_int_equal(len, variants[v].gen_len);
        assert_memory_equal(prog, variants[v].gen, len * sizeof *prog);
        free(prog);
    }
    /* The two variants differ (the grant's TCP sockets) and stay loadable. */
    assert_true(fb_seccomp_plain[0].code == (BPF_LD | BPF_W | BPF_ABS));
    assert_true(variants[1].gen_len > variants[0].gen_len);
    assert_true(variants[1].gen_len <= BPF_MAXINSNS);
}

static const uint64_t arg_values[] = {
    0, 1, 2, 3, 4, 7, 10, 16, 17, 40, 44,
    0x5412, 0x541c, 0x5401 /* TCGETS */, 0x100005412ull, 0x10000541cull, 0xffffffff00005412ull,
    0x80000 /* SOCK_CLOEXEC */, 0x80001, 0x800 | 1, 0x80002,
    0x11 /* SIGCHLD */, 0x10000000 | 0x11 /* CLONE_NEWUSER */, 0x40000000 | 0x11, 0x20000 | 0x11,
    0x80 /* CLONE_NEWTIME */, 0x01200011 /* glibc fork */, 0x3d0f00 /* pthread_create */,
    0xffffffffull, 0x100000000ull, 0x100000001ull, 0xffffffffffffffffull,
};
#define NVALUES (sizeof arg_values / sizeof arg_values[0])

/* Syscalls with argument checks (either filter), all argument triples. */
static const int checked_nrs[] = {16 /* ioctl */, 41 /* socket */, 53 /* socketpair */, 56 /* clone */,
                                  135 /* personality */, 160 /* setrlimit */, 302 /* prlimit64 */,
                                  435 /* clone3 */, 272 /* unshare */, 165 /* mount */};

/* The reference program (libseccomp's, fb_seccomp_build_reference) for
 * one variant, with the two filters it joins. */
typedef struct reference {
    struct sock_filter *allow, *deny, *joined;
    unsigned short allow_len, deny_len, joined_len;
} reference;

static void reference_build(bool inet, reference *r)
{
    fb_err err = {{0}};
    assert_int_equal(fb_seccomp_build_allow(inet, &r->allow, &r->allow_len, &err), 0);
    assert_int_equal(fb_seccomp_build_deny(&r->deny, &r->deny_len, &err), 0);
    assert_int_equal(fb_seccomp_build_reference(inet, &r->joined, &r->joined_len, &err), 0);
}

static void reference_free(reference *r)
{
    free(r->allow);
    free(r->deny);
    free(r->joined);
}

static void expect_same(const variant *v, const reference *r, const struct seccomp_data *d)
{
    uint32_t want = stacked(r->deny, r->deny_len, r->allow, r->allow_len, d);
    uint32_t ref = run(r->joined, r->joined_len, d);
    uint32_t got = run(v->gen, v->gen_len, d);
    if (got != want || ref != want)
        fail_msg("inet=%d arch=0x%x nr=%d args=%llx,%llx,%llx: loaded program 0x%x, reference 0x%x, "
                 "two filters 0x%x",
                 v->inet, d->arch, d->nr, (unsigned long long)d->args[0], (unsigned long long)d->args[1],
                 (unsigned long long)d->args[2], got, ref, want);
}

/* Numbers at the edges of the search and of the x32 check. */
static const uint32_t edge_nrs[] = {1022, 1023, 1024, 1025, 4095, 65535, 0x3fffffff, 0x40000000, 0x40000001,
                                    0x40000010, 0x4000012e, 0x7fffffff, 0x80000000, 0xbfffffff,
                                    0xc0000000, 0xfffffffe, 0xffffffff};

static void test_loaded_program_equals_reference(void **state)
{
    (void)state;
    unsigned long compared = 0;
    for (int v = 0; v < 2; v++) {
        reference r = {0};
        reference_build(variants[v].inet, &r);
        /* The point of the search over ranges: a much shorter program. */
        assert_true(variants[v].gen_len * 2 < r.joined_len);
        const uint32_t arches[] = {ARCH_X86_64, ARCH_I386, 0};
        for (size_t ai = 0; ai < 3; ai++) {
            /* Every syscall number (and the x32 ones, and past the end)
             * with a spread of arguments. */
            for (int64_t nr = -1; nr < 1100; nr++) {
                for (int x32 = 0; x32 < 2; x32++) {
                    for (size_t i = 0; i < NVALUES; i += 3) {
                        struct seccomp_data d = {.nr = (int)(nr + (x32 ? X32_BIT : 0)), .arch = arches[ai]};
                        for (int k = 0; k < 6; k++)
                            d.args[k] = arg_values[(i + (size_t)k * 7) % NVALUES];
                        expect_same(&variants[v], &r, &d);
                        compared++;
                    }
                }
            }
            for (size_t n = 0; n < sizeof edge_nrs / sizeof edge_nrs[0]; n++)
                for (size_t i = 0; i < NVALUES; i++) {
                    struct seccomp_data d = {.nr = (int)edge_nrs[n], .arch = arches[ai]};
                    d.args[0] = d.args[1] = d.args[2] = arg_values[i];
                    expect_same(&variants[v], &r, &d);
                    compared++;
                }
            /* The syscalls with argument checks: every triple. */
            for (size_t n = 0; n < sizeof checked_nrs / sizeof checked_nrs[0]; n++)
                for (size_t i = 0; i < NVALUES; i++)
                    for (size_t j = 0; j < NVALUES; j++)
                        for (size_t k = 0; k < NVALUES; k++) {
                            struct seccomp_data d = {.nr = checked_nrs[n], .arch = arches[ai]};
                            d.args[0] = arg_values[i];
                            d.args[1] = arg_values[j];
                            d.args[2] = arg_values[k];
                            d.args[3] = arg_values[(i + j) % NVALUES];
                            expect_same(&variants[v], &r, &d);
                            compared++;
                        }
        }
        /* And random inputs (fixed seed: the same run every time). */
        uint64_t s = 0x9e3779b97f4a7c15ull;
        for (int i = 0; i < 200000; i++) {
            uint64_t w[8];
            for (int k = 0; k < 8; k++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                w[k] = s;
            }
            struct seccomp_data d = {.nr = (int)(w[0] % 2 ? w[0] % 460 : w[0] >> 32),
                                     .arch = w[7] % 8 ? ARCH_X86_64 : ARCH_I386};
            for (int k = 0; k < 6; k++)
                d.args[k] = w[k + 1] % 3 == 0 ? w[k + 2] : arg_values[w[k + 1] % NVALUES];
            expect_same(&variants[v], &r, &d);
            compared++;
        }
        reference_free(&r);
    }
    assert_true(compared > 1000000);
}

/* The kernel's action cache (kernel/seccomp.c, seccomp_is_const_allow):
 * at load it emulates the filter for each syscall number with only the
 * number and the architecture known; a call whose path reaches "allow"
 * through those alone skips the filter from then on.  Any other
 * instruction on the path (an argument load, a shift) makes the call
 * uncached: the filter then runs at every such syscall. */
static bool const_allow(const struct sock_filter *prog, unsigned len, uint32_t arch, uint32_t nr)
{
    uint32_t A = 0;
    for (unsigned pc = 0; pc < len; pc++) {
        const struct sock_filter *f = &prog[pc];
        switch (f->code) {
        case BPF_LD | BPF_W | BPF_ABS:
            if (f->k == offsetof(struct seccomp_data, nr))
                A = nr;
            else if (f->k == offsetof(struct seccomp_data, arch))
                A = arch;
            else
                return false;
            break;
        case BPF_RET | BPF_K:
            return f->k == SECCOMP_RET_ALLOW;
        case BPF_JMP | BPF_JA:
            pc += f->k;
            break;
        case BPF_JMP | BPF_JEQ | BPF_K:
            pc += A == f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JGE | BPF_K:
            pc += A >= f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JGT | BPF_K:
            pc += A > f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JSET | BPF_K:
            pc += (A & f->k) ? f->jt : f->jf;
            break;
        case BPF_ALU | BPF_AND | BPF_K:
            A &= f->k;
            break;
        default:
            return false;
        }
    }
    return false;
}

/* Every call the reference left to the kernel's cache still is, and no
 * other: the shorter program must not send allowed calls through the
 * filter at run time.  Most of the allowlist is cached. */
static void test_allowed_calls_stay_cached(void **state)
{
    (void)state;
    for (int v = 0; v < 2; v++) {
        reference r = {0};
        reference_build(variants[v].inet, &r);
        unsigned cached = 0;
        for (uint32_t nr = 0; nr < 1100; nr++) {
            bool want = const_allow(r.joined, r.joined_len, ARCH_X86_64, nr);
            bool got = const_allow(variants[v].gen, variants[v].gen_len, ARCH_X86_64, nr);
            if (want != got)
                fail_msg("inet=%d nr=%u: cached %d, reference %d", variants[v].inet, nr, got, want);
            cached += got;
            assert_false(const_allow(variants[v].gen, variants[v].gen_len, ARCH_I386, nr));
            assert_false(const_allow(variants[v].gen, variants[v].gen_len, ARCH_X86_64, nr | X32_BIT));
        }
        assert_true(cached > 200);
        reference_free(&r);
    }
}

static uint32_t verdict(bool inet, int nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
    struct seccomp_data d = {.nr = nr, .arch = ARCH_X86_64, .args = {a0, a1, a2, 0, 0, 0}};
    const variant *v = &variants[inet ? 1 : 0];
    return run(v->gen, v->gen_len, &d);
}

static void test_refusals(void **state)
{
    (void)state;
    for (int v = 0; v < 2; v++) {
        bool inet = v == 1;
        /* ioctl: TIOCSTI and TIOCLINUX, also with high bits set (the
         * kernel reads 32 bits); other requests pass. */
        assert_int_equal(verdict(inet, 16, 0, 0x5412, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 16, 0, 0x100005412ull, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 16, 0, 0xffffffff00005412ull, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 16, 0, 0x541c, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 16, 0, 0x10000541cull, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 16, 0, 0x5401, 0), SECCOMP_RET_ALLOW);
        /* RLIMIT_CORE (4) cannot change; querying it and other limits can. */
        assert_int_equal(verdict(inet, 160, 4, 0x7ffd0000, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 160, 0x100000004ull, 0x7ffd0000, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 160, 7, 0x7ffd0000, 0), SECCOMP_RET_ALLOW);
        assert_int_equal(verdict(inet, 302, 0, 4, 0x7ffd0000), RET_EPERM);
        assert_int_equal(verdict(inet, 302, 0, 0x100000004ull, 0x7ffd0000), RET_EPERM);
        assert_int_equal(verdict(inet, 302, 0, 4, 0), SECCOMP_RET_ALLOW);
        assert_int_equal(verdict(inet, 302, 0, 7, 0x7ffd0000), SECCOMP_RET_ALLOW);
        /* clone: no namespace flag; clone3 falls back; unshare, mount no. */
        assert_int_equal(verdict(inet, 56, 0x01200011, 0, 0), SECCOMP_RET_ALLOW);
        assert_int_equal(verdict(inet, 56, 0x10000011, 0, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 56, 0x40000011, 0, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 56, 0x80 | 0x11, 0, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 435, 0, 0, 0), RET_ENOSYS);
        assert_int_equal(verdict(inet, 272, 0x10000000, 0, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 165, 0, 0, 0), RET_EPERM);
        /* Sockets: AF_UNIX always; TCP over AF_INET/AF_INET6 only with a
         * grant; never UDP, raw, netlink, packet or vsock. */
        assert_int_equal(verdict(inet, 41, 1, 1, 0), SECCOMP_RET_ALLOW);
        assert_int_equal(verdict(inet, 53, 1, 1, 0), SECCOMP_RET_ALLOW);
        assert_int_equal(verdict(inet, 53, 2, 1, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 41, 2, 1, 0), inet ? SECCOMP_RET_ALLOW : RET_EPERM);
        assert_int_equal(verdict(inet, 41, 10, 0x80001, 0), inet ? SECCOMP_RET_ALLOW : RET_EPERM);
        assert_int_equal(verdict(inet, 41, 2, 2, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 41, 2, 3, 1), RET_EPERM);
        assert_int_equal(verdict(inet, 41, 16, 3, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 41, 17, 3, 0), RET_EPERM);
        assert_int_equal(verdict(inet, 41, 40, 1, 0), RET_EPERM);
        /* personality: query and default only. */
        assert_int_equal(verdict(inet, 135, 0xffffffff, 0, 0), SECCOMP_RET_ALLOW);
        assert_int_equal(verdict(inet, 135, 0x0040000, 0, 0), RET_EPERM);
        /* A foreign architecture and the x32 ABI are killed. */
        struct seccomp_data d = {.nr = 16, .arch = ARCH_I386};
        assert_int_equal(run(variants[v].gen, variants[v].gen_len, &d), SECCOMP_RET_KILL_THREAD);
        d = (struct seccomp_data){.nr = (int)(X32_BIT | 16), .arch = ARCH_X86_64};
        assert_int_equal(run(variants[v].gen, variants[v].gen_len, &d), SECCOMP_RET_KILL_THREAD);
    }
}

/* The join refuses what it cannot carry over safely. */
static void test_concat_refuses(void **state)
{
    (void)state;
    struct sock_filter ok[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_filter ret_a[] = {BPF_STMT(BPF_RET | BPF_A, 0)};
    struct sock_filter out[] = {BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0), BPF_STMT(BPF_RET | BPF_K, 0)};
    struct sock_filter *p = NULL;
    unsigned short len = 0;
    fb_err err = {{0}};
    assert_int_equal(fb_seccomp_concat(ret_a, 1, ok, 1, &p, &len, &err), -1);
    assert_int_equal(fb_seccomp_concat(out, 2, ok, 1, &p, &len, &err), -1);
    assert_int_equal(fb_seccomp_concat(ok, 1, ok, 0, &p, &len, &err), -1);
    assert_int_equal(fb_seccomp_concat(ok, 1, ok, 1, &p, &len, &err), 0);
    assert_int_equal(len, 2);
    assert_int_equal(p[0].code, BPF_JMP | BPF_JA);
    assert_int_equal(p[0].k, 0);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_is_what_the_rules_build),
        cmocka_unit_test(test_loaded_program_equals_reference),
        cmocka_unit_test(test_allowed_calls_stay_cached),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_concat_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
