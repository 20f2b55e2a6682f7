/*
 * qemu_stub.h - libraries QEMU links but a ForgeBox VM never uses, replaced
 * in QEMU's process by stubs that cost it no memory (issue 9 item 4).
 *
 * Today one: Capstone, the disassembler behind QEMU's debug log and the
 * monitor's x/i (src/qemu-stub/capstone.c says why it costs 1.3 MiB of
 * private memory per VM).  vm.c writes the stub into QEMU's private root
 * and points LD_LIBRARY_PATH at it, but only when every Capstone function
 * the installed QEMU imports is one the stub defines: QEMU is linked with
 * immediate binding, so a missing symbol would stop every VM from starting
 * after a QEMU upgrade; such a QEMU gets its real library, as before.
 */
#ifndef FB_QEMU_STUB_H
#define FB_QEMU_STUB_H

#include <stdbool.h>
#include <stddef.h>

/* Where the stub sits in QEMU's root, the directory LD_LIBRARY_PATH names. */
#define FB_QEMU_STUB_DIR "/lib-stub"
#define FB_QEMU_CAPSTONE_SONAME "libcapstone.so.4"

/* The stub library's bytes (built from src/qemu-stub/capstone.c). */
extern const unsigned char fb_qemu_capstone_stub[];
extern const size_t fb_qemu_capstone_stub_len;

/* The functions the stub defines, NULL-terminated. */
extern const char *const fb_qemu_capstone_stub_symbols[];

/* Whether the ELF executable at `bin` imports Capstone functions ("cs_*",
 * undefined in its dynamic symbol table) and every one of them is in
 * `names` (NULL-terminated): 1 if so, 0 if it imports none, -1 if it
 * imports one not in `names` or cannot be read as a 64-bit ELF file. */
int fb_qemu_stub_covers(const char *bin, const char *const *names);

/* The same for the Capstone functions the ELF library at `lib` defines
 * (tests: the stub defines exactly fb_qemu_capstone_stub_symbols). */
int fb_qemu_stub_exports(const char *lib, const char *const *names);

/* fb_qemu_stub_covers(bin, fb_qemu_capstone_stub_symbols) == 1, remembered
 * for as long as bin's device, inode, size and mtime stay the same (vm.c
 * asks at every VM start). */
bool fb_qemu_stub_capstone(const char *bin);

#endif
