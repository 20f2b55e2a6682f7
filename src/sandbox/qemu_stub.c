/*
 * qemu_stub.c - which libraries of QEMU's are replaced by stubs in its
 * process, decided from the installed binary's imports (qemu_stub.h).
 *
 * The decision reads QEMU's dynamic symbol table (.dynsym and its string
 * table, found through the section headers) rather than trusting a QEMU
 * version: what matters is that the loader will find every function QEMU
 * binds at start in the stub.
 */
#define _GNU_SOURCE
#include "sandbox/qemu_stub.h"

#include <elf.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const fb_qemu_capstone_stub_symbols[] = {
    "cs_version",    "cs_support",    "cs_open",     "cs_close",      "cs_option",    "cs_errno",
    "cs_strerror",   "cs_disasm",     "cs_disasm_ex", "cs_free",      "cs_malloc",    "cs_disasm_iter",
    "cs_reg_name",   "cs_insn_name",  "cs_group_name", "cs_insn_group", "cs_reg_read", "cs_reg_write",
    "cs_op_count",   "cs_op_index",   "cs_regs_access", NULL,
};

static bool listed(const char *name, const char *const *names)
{
    for (; *names; names++)
        if (strcmp(name, *names) == 0)
            return true;
    return false;
}

/* Reads `len` bytes at `off` of fd into a new buffer (NUL-terminated). */
static char *read_at(int fd, uint64_t off, uint64_t len)
{
    if (len > (64u << 20))
        return NULL;
    char *buf = malloc((size_t)len + 1);
    if (!buf)
        return NULL;
    if (pread(fd, buf, (size_t)len, (off_t)off) != (ssize_t)len) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Visits the dynamic symbols of the ELF file at `path` whose names start
 * with `prefix` and that are undefined (imports) or defined (exports), as
 * asked: 1 if every one visited is in `names` and at least one was, 0 if
 * none was, -1 if one is not in `names` or the file is no 64-bit
 * little-endian ELF file with a dynamic symbol table. */
static int scan(const char *path, const char *prefix, bool undefined, const char *const *names)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = -1;
    char *shdrs = NULL, *syms = NULL, *strs = NULL;
    Elf64_Ehdr eh;
    if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
        eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0)
        goto out;
    shdrs = read_at(fd, eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr));
    if (!shdrs)
        goto out;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)shdrs, *dynsym = NULL;
    for (unsigned i = 0; i < eh.e_shnum; i++)
        if (sh[i].sh_type == SHT_DYNSYM)
            dynsym = &sh[i];
    if (!dynsym || dynsym->sh_link >= eh.e_shnum || dynsym->sh_entsize != sizeof(Elf64_Sym))
        goto out;
    const Elf64_Shdr *dynstr = &sh[dynsym->sh_link];
    syms = read_at(fd, dynsym->sh_offset, dynsym->sh_size);
    strs = read_at(fd, dynstr->sh_offset, dynstr->sh_size);
    if (!syms || !strs)
        goto out;
    size_t n = dynsym->sh_size / sizeof(Elf64_Sym), plen = strlen(prefix);
    rc = 0;
    for (size_t i = 1; i < n; i++) {
        const Elf64_Sym *s = (const Elf64_Sym *)syms + i;
        if (s->st_name >= dynstr->sh_size || (s->st_shndx == SHN_UNDEF) != undefined)
            continue;
        const char *name = strs + s->st_name;
        if (strncmp(name, prefix, plen) != 0)
            continue;
        if (!listed(name, names)) {
            rc = -1;
            break;
        }
        rc = 1;
    }
out:
    free(shdrs);
    free(syms);
    free(strs);
    close(fd);
    return rc;
}

int fb_qemu_stub_covers(const char *bin, const char *const *names)
{
    return scan(bin, "cs_", true, names);
}

int fb_qemu_stub_exports(const char *lib, const char *const *names)
{
    return scan(lib, "cs_", false, names);
}

bool fb_qemu_stub_capstone(const char *bin)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static struct stat seen;
    static bool known, answer;
    struct stat st;
    if (stat(bin, &st) < 0)
        return false;
    pthread_mutex_lock(&lock);
    if (!known || st.st_dev != seen.st_dev || st.st_ino != seen.st_ino || st.st_size != seen.st_size ||
        st.st_mtim.tv_sec != seen.st_mtim.tv_sec || st.st_mtim.tv_nsec != seen.st_mtim.tv_nsec) {
        answer = fb_qemu_stub_covers(bin, fb_qemu_capstone_stub_symbols) == 1;
        seen = st;
        known = true;
    }
    bool r = answer;
    pthread_mutex_unlock(&lock);
    return r;
}
