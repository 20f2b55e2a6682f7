/*
 * seccomp_rules.h - the tool-process seccomp policy as libseccomp rules,
 * compiled at BUILD time.
 *
 * The rule list (seccomp_rules.c) is the single source of the policy.  It
 * is not linked into fb-agent: tools/gen_seccomp.c runs it at build time
 * and writes the resulting BPF programs into build/gen/seccomp_bpf.h, which
 * harden.c loads as they are (no libseccomp, no compile at every hello).
 * tests/unit/test_seccomp.c rebuilds the programs from the rules and checks
 * that the header holds exactly those bytes, and that the one program is
 * equivalent to the two filters it replaces.
 */
#ifndef FB_AGENT_SECCOMP_RULES_H
#define FB_AGENT_SECCOMP_RULES_H

#include <stdbool.h>
#include <linux/filter.h>

#include "common/util.h"

/* The allowlist (default EPERM) and the refinement filter (default
 * ALLOW, refusing single uses of allowed calls), as libseccomp exports
 * them.  *prog is malloc'd. */
int fb_seccomp_build_allow(bool allow_inet, struct sock_filter **prog, unsigned short *len, fb_err *err);
int fb_seccomp_build_deny(struct sock_filter **prog, unsigned short *len, fb_err *err);

/* The reference program: the refinement filter with each of its "return
 * ALLOW" turned into a jump to the allowlist appended after it (what
 * fb-agent loaded up to session 6; ~390 instructions).  Same verdict as
 * the two filters stacked (the kernel's most restrictive answer) because
 * the refinements only refuse calls the allowlist allows and both kill a
 * foreign architecture alike (proven by the unit test). */
int fb_seccomp_concat(const struct sock_filter *deny, unsigned short deny_len,
                      const struct sock_filter *allow, unsigned short allow_len,
                      struct sock_filter **prog, unsigned short *len, fb_err *err);

/* allow + deny + concat for one variant, with libseccomp. */
int fb_seccomp_build_reference(bool allow_inet, struct sock_filter **prog, unsigned short *len, fb_err *err);

/* The program loaded per exec (build/gen/seccomp_bpf.h): a search over
 * the runs of consecutive allowed numbers with the argument checks after
 * it, about a third of the reference's length; the unit test proves it
 * gives the reference's verdict on every input it tries. */
int fb_seccomp_build_single(bool allow_inet, struct sock_filter **prog, unsigned short *len, fb_err *err);

#endif
