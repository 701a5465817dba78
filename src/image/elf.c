/*
 * elf.c - the little ELF reading the image builder needs: the .modinfo
 * section of a kernel module (its "key=value\0" strings give depends= and
 * vermagic=), and whether an executable is static (no PT_INTERP), which
 * /init must be since the initramfs has no dynamic loader.
 *
 * Only ELF64 little-endian is accepted (the guest is x86-64). Every offset
 * read from the file is bounds-checked before use: a module file is input.
 */
#include "ironclaw/image.h"
#include "ironclaw/cleanup.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct mapped {
    const uint8_t *p;
    size_t len;
};

static void unmap(struct mapped *m)
{
    if (m->p && m->len)
        munmap((void *)m->p, m->len);
}

static int map_file(const char *path, struct mapped *m, ic_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ic_err_sys(err, errno, "cannot stat %s", path);
    if (!S_ISREG(st.st_mode))
        return ic_err_set(err, EINVAL, "%s is not a regular file", path);
    if (st.st_size < (off_t)sizeof(Elf64_Ehdr))
        return ic_err_set(err, ENOEXEC, "%s is not an ELF file (too short)", path);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        return ic_err_sys(err, errno, "cannot map %s", path);
    m->p = p;
    m->len = (size_t)st.st_size;
    return 0;
}

/* True if [off, off+n) lies inside the file, without overflow. */
static int in_file(const struct mapped *m, uint64_t off, uint64_t n)
{
    return off <= m->len && n <= m->len - off;
}

static int check_ehdr(const struct mapped *m, const char *path, Elf64_Ehdr *eh, ic_err *err)
{
    /* m is mapped: map_file() failing returned ic_err_sys() < 0, which the
     * analyzer cannot see (it takes that path as success). */
    memcpy(eh, m->p, sizeof(*eh)); // NOLINT(clang-analyzer-core.NonNullParamChecker)
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return ic_err_set(err, ENOEXEC, "%s is not an ELF file", path);
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB)
        return ic_err_set(err, ENOEXEC, "%s is not a 64-bit little-endian ELF file", path);
    return 0;
}

/* Section header i, copied out (the mapping may be unaligned). */
static int get_shdr(const struct mapped *m, const Elf64_Ehdr *eh, uint64_t i, Elf64_Shdr *sh)
{
    uint64_t off = eh->e_shoff + i * sizeof(*sh);
    if (i > UINT32_MAX || !in_file(m, off, sizeof(*sh)))
        return -1;
    memcpy(sh, m->p + off, sizeof(*sh));
    return 0;
}

/* Finds the section called `want`; -ENOENT if there is none. */
static int find_section(const struct mapped *m, const char *path, const Elf64_Ehdr *eh,
                        const char *want, Elf64_Shdr *out, ic_err *err)
{
    if (eh->e_shoff == 0)
        return ic_err_set(err, ENOEXEC, "%s has no section headers", path);
    if (eh->e_shentsize != sizeof(Elf64_Shdr))
        return ic_err_set(err, ENOEXEC, "%s has an unexpected section header size", path);
    /* Large section counts and string-table indexes spill into section 0. */
    Elf64_Shdr s0;
    if (get_shdr(m, eh, 0, &s0) < 0)
        return ic_err_set(err, ENOEXEC, "%s: section headers lie outside the file", path);
    uint64_t shnum = eh->e_shnum ? eh->e_shnum : s0.sh_size;
    uint64_t strndx = eh->e_shstrndx == SHN_XINDEX ? s0.sh_link : eh->e_shstrndx;
    Elf64_Shdr strs;
    if (strndx >= shnum || get_shdr(m, eh, strndx, &strs) < 0 ||
        !in_file(m, strs.sh_offset, strs.sh_size))
        return ic_err_set(err, ENOEXEC, "%s: bad section name table", path);
    size_t wlen = strlen(want) + 1;
    for (uint64_t i = 0; i < shnum; i++) {
        Elf64_Shdr sh;
        if (get_shdr(m, eh, i, &sh) < 0)
            return ic_err_set(err, ENOEXEC, "%s: section headers lie outside the file", path);
        if (sh.sh_name >= strs.sh_size || strs.sh_size - sh.sh_name < wlen)
            continue;
        if (memcmp(m->p + strs.sh_offset + sh.sh_name, want, wlen) != 0)
            continue;
        if (sh.sh_type == SHT_NOBITS || !in_file(m, sh.sh_offset, sh.sh_size))
            return ic_err_set(err, ENOEXEC, "%s: section %s lies outside the file", path, want);
        *out = sh;
        return 0;
    }
    return -ENOENT;
}

int ic_image_modinfo(const char *path, const char *key, char **out, ic_err *err)
{
    *out = NULL;
    struct mapped m = {0};
    int r = map_file(path, &m, err);
    if (r < 0)
        return r;
    Elf64_Ehdr eh;
    Elf64_Shdr sh = {0};
    r = check_ehdr(&m, path, &eh, err);
    if (r == 0 && eh.e_type != ET_REL)
        r = ic_err_set(err, ENOEXEC, "%s is not a kernel module (not a relocatable ELF)", path);
    if (r == 0) {
        r = find_section(&m, path, &eh, ".modinfo", &sh, err);
        if (r == -ENOENT)
            r = ic_err_set(err, ENOEXEC, "%s is not a kernel module (no .modinfo section)", path);
    }
    if (r < 0) {
        unmap(&m);
        return r;
    }
    /* .modinfo is a run of NUL-terminated "key=value" strings, possibly
     * with padding NULs between them. The last one may lack its NUL. */
    const char *p = (const char *)m.p + sh.sh_offset, *end = p + sh.sh_size;
    size_t klen = strlen(key);
    while (p < end) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        size_t n = nul ? (size_t)(nul - p) : (size_t)(end - p);
        if (n > klen && memcmp(p, key, klen) == 0 && p[klen] == '=') {
            *out = strndup(p + klen + 1, n - klen - 1);
            if (!*out)
                r = ic_err_set(err, ENOMEM, "out of memory");
            break;
        }
        p += n + 1;
    }
    unmap(&m);
    return r;
}

int ic_image_check_static(const char *path, const char *what, ic_err *err)
{
    struct mapped m = {0};
    int r = map_file(path, &m, err);
    if (r < 0)
        return r == -ENOEXEC ? ic_err_set(err, ENOEXEC, "%s %s is not an executable", what, path)
                             : r;
    Elf64_Ehdr eh;
    r = check_ehdr(&m, path, &eh, err);
    if (r < 0) {
        unmap(&m);
        return ic_err_set(err, ENOEXEC, "%s %s is not a 64-bit ELF executable", what, path);
    }
    if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)
        r = ic_err_set(err, ENOEXEC, "%s %s is not an ELF executable", what, path);
    else if (eh.e_machine != EM_X86_64)
        r = ic_err_set(err, ENOEXEC, "%s %s is not an x86-64 executable", what, path);
    else if (eh.e_phentsize != sizeof(Elf64_Phdr) ||
             !in_file(&m, eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr)))
        r = ic_err_set(err, ENOEXEC, "%s %s has damaged program headers", what, path);
    for (uint64_t i = 0; r == 0 && i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, m.p + eh.e_phoff + i * sizeof(ph), sizeof(ph));
        if (ph.p_type == PT_INTERP)
            r = ic_err_set(err, ENOEXEC,
                           "%s %s is dynamically linked (it asks for a program interpreter); "
                           "the initramfs has no dynamic loader or libc, so it must be a static binary",
                           what, path);
    }
    unmap(&m);
    return r;
}
