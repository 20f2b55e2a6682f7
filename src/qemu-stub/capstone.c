/*
 * capstone.c - the libcapstone.so.4 QEMU loads in ForgeBox's VMs: every
 * function of Capstone 4's API, none of which disassembles anything.
 *
 * Why it exists: QEMU links the Capstone disassembler for its debug log
 * (-d in_asm, out_asm) and the monitor's x/i, neither of which a ForgeBox
 * VM has (-monitor none, no -d).  Yet the dynamic loader maps and relocates
 * the real library in every QEMU process: 1.3 MiB of relocated tables
 * (.data.rel.ro) become private memory of each VM, and ~1.8 MiB more of its
 * file is read in (bench/README.md, "Session 8: VM memory").  This stub,
 * compiled with no libc (-nostdlib, nothing to relocate), is what QEMU finds
 * first on LD_LIBRARY_PATH in its private root (src/sandbox/qemu_stub.h says
 * when it is used).  Should QEMU ever disassemble, cs_open fails with
 * CS_ERR_ARCH and QEMU prints no instructions, as it does for a target
 * Capstone does not support.
 *
 * Handles are size_t and enums int, as in capstone.h (not included: the
 * stub must build without Capstone's headers installed).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { CS_ERR_OK = 0, CS_ERR_ARCH = 2, CS_ERR_HANDLE = 3 };

unsigned int cs_version(int *major, int *minor)
{
    if (major)
        *major = 4;
    if (minor)
        *minor = 0;
    return (4u << 8) | 0u;
}

bool cs_support(int query)
{
    (void)query;
    return false;
}

int cs_open(int arch, int mode, size_t *handle)
{
    (void)arch;
    (void)mode;
    if (handle)
        *handle = 0;
    return CS_ERR_ARCH;
}

int cs_close(size_t *handle)
{
    if (handle)
        *handle = 0;
    return CS_ERR_OK;
}

int cs_option(size_t handle, int type, size_t value)
{
    (void)handle;
    (void)type;
    (void)value;
    return CS_ERR_HANDLE;
}

int cs_errno(size_t handle)
{
    (void)handle;
    return CS_ERR_HANDLE;
}

const char *cs_strerror(int code)
{
    (void)code;
    return "Capstone is not loaded in this process (ForgeBox stub)";
}

/* Both names share this body without a call through the PLT (which would
 * be one relocation to process at load). */
static size_t no_insns(void **insn)
{
    if (insn)
        *insn = NULL;
    return 0;
}

size_t cs_disasm(size_t handle, const uint8_t *code, size_t size, uint64_t address, size_t count, void **insn)
{
    (void)handle;
    (void)code;
    (void)size;
    (void)address;
    (void)count;
    return no_insns(insn);
}

size_t cs_disasm_ex(size_t handle, const uint8_t *code, size_t size, uint64_t address, size_t count,
                    void **insn)
{
    (void)handle;
    (void)code;
    (void)size;
    (void)address;
    (void)count;
    return no_insns(insn);
}

void cs_free(void *insn, size_t count)
{
    (void)insn;
    (void)count;
}

void *cs_malloc(size_t handle)
{
    (void)handle;
    return NULL;
}

bool cs_disasm_iter(size_t handle, const uint8_t **code, size_t *size, uint64_t *address, void *insn)
{
    (void)handle;
    (void)code;
    (void)size;
    (void)address;
    (void)insn;
    return false;
}

const char *cs_reg_name(size_t handle, unsigned int reg_id)
{
    (void)handle;
    (void)reg_id;
    return NULL;
}

const char *cs_insn_name(size_t handle, unsigned int insn_id)
{
    (void)handle;
    (void)insn_id;
    return NULL;
}

const char *cs_group_name(size_t handle, unsigned int group_id)
{
    (void)handle;
    (void)group_id;
    return NULL;
}

bool cs_insn_group(size_t handle, const void *insn, unsigned int group_id)
{
    (void)handle;
    (void)insn;
    (void)group_id;
    return false;
}

bool cs_reg_read(size_t handle, const void *insn, unsigned int reg_id)
{
    (void)handle;
    (void)insn;
    (void)reg_id;
    return false;
}

bool cs_reg_write(size_t handle, const void *insn, unsigned int reg_id)
{
    (void)handle;
    (void)insn;
    (void)reg_id;
    return false;
}

int cs_op_count(size_t handle, const void *insn, unsigned int op_type)
{
    (void)handle;
    (void)insn;
    (void)op_type;
    return -1;
}

int cs_op_index(size_t handle, const void *insn, unsigned int op_type, unsigned int position)
{
    (void)handle;
    (void)insn;
    (void)op_type;
    (void)position;
    return -1;
}

int cs_regs_access(size_t handle, const void *insn, uint16_t *regs_read, uint8_t *regs_read_count,
                   uint16_t *regs_write, uint8_t *regs_write_count)
{
    (void)handle;
    (void)insn;
    (void)regs_read;
    (void)regs_write;
    if (regs_read_count)
        *regs_read_count = 0;
    if (regs_write_count)
        *regs_write_count = 0;
    return CS_ERR_HANDLE;
}
