/*
 * elfdeps.c - the shared libraries an ELF executable needs, found the way
 * the dynamic loader finds them, so that the VMM's jail can hold exactly
 * those files: PT_INTERP, then DT_NEEDED names searched in DT_RPATH (when
 * there is no DT_RUNPATH), DT_RUNPATH ($ORIGIN expanded), the directories
 * of /etc/ld.so.conf (with its includes) and the default directories.
 * Runs in the launch trampoline, where blocking reads are fine.
 */
#include "vm/jail.h"

#include "ironclaw/cleanup.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LIBS 256
#define MAX_DIRS 64

static const char *const default_dirs[] = {
    "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib",
    "/usr/lib", NULL,
};

struct deps {
    char *seen[MAX_LIBS];
    size_t n_seen;
    char *conf_dirs[MAX_DIRS];
    size_t n_conf;
    ic_elf_dep_fn fn;
    void *ud;
    char *why;
    size_t why_size;
};

struct elf_file {
    int fd;
    Elf64_Ehdr eh;
    Elf64_Phdr ph[64];
    size_t n_ph;
};

static int why(struct deps *d, const char *fmt, const char *arg)
{
    snprintf(d->why, d->why_size, fmt, arg);
    return -1;
}

static bool read_at(int fd, void *buf, size_t n, off_t off)
{
    return pread(fd, buf, n, off) == (ssize_t)n;
}

/* 0: a 64-bit ELF for this machine; 1: not ELF (no dependencies); -1 bad. */
static int elf_open(const char *path, struct elf_file *e)
{
    e->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (e->fd < 0)
        return -1;
    if (!read_at(e->fd, &e->eh, sizeof(e->eh), 0) || memcmp(e->eh.e_ident, ELFMAG, SELFMAG) != 0)
        return 1;
    if (e->eh.e_ident[EI_CLASS] != ELFCLASS64 || e->eh.e_machine != EM_X86_64 ||
        e->eh.e_phentsize != sizeof(Elf64_Phdr))
        return -1;
    e->n_ph = e->eh.e_phnum < 64 ? e->eh.e_phnum : 64;
    if (!read_at(e->fd, e->ph, e->n_ph * sizeof(Elf64_Phdr), (off_t)e->eh.e_phoff))
        return -1;
    return 0;
}

/* File offset of a virtual address, through the PT_LOAD segments. */
static bool vaddr_off(const struct elf_file *e, uint64_t va, off_t *off)
{
    for (size_t i = 0; i < e->n_ph; i++) {
        const Elf64_Phdr *p = &e->ph[i];
        if (p->p_type == PT_LOAD && va >= p->p_vaddr && va < p->p_vaddr + p->p_filesz) {
            *off = (off_t)(p->p_offset + (va - p->p_vaddr));
            return true;
        }
    }
    return false;
}

static bool read_str(int fd, off_t off, char *buf, size_t size)
{
    ssize_t n = pread(fd, buf, size - 1, off);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return strlen(buf) < size - 1;
}

static bool is_elf64(const char *path)
{
    struct elf_file e;
    int r = elf_open(path, &e);
    if (e.fd >= 0)
        close(e.fd);
    return r == 0;
}

static int visit(struct deps *d, const char *path);

/* Tries dir/name; on a hit visits it. 1 found, 0 not there, -1 error. */
static int try_dir(struct deps *d, const char *dir, const char *name, const char *origin)
{
    char base[IC_PATH_MAX], path[IC_PATH_MAX];
    if (strncmp(dir, "$ORIGIN", 7) == 0)
        snprintf(base, sizeof(base), "%s%s", origin, dir + 7);
    else
        snprintf(base, sizeof(base), "%s", dir);
    if (snprintf(path, sizeof(path), "%s/%s", base, name) >= (int)sizeof(path))
        return 0;
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || !is_elf64(path))
        return 0;
    return visit(d, path) < 0 ? -1 : 1;
}

static int search_list(struct deps *d, const char *list, const char *name, const char *origin)
{
    char copy[IC_PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", list);
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        int r = try_dir(d, dir, name, origin);
        if (r != 0)
            return r;
    }
    return 0;
}

static int resolve(struct deps *d, const char *name, const char *rpath, const char *runpath,
                   const char *origin)
{
    if (strchr(name, '/'))
        return visit(d, name);
    int r = 0;
    if (rpath && !runpath)
        r = search_list(d, rpath, name, origin);
    if (r == 0 && runpath)
        r = search_list(d, runpath, name, origin);
    for (size_t i = 0; r == 0 && i < d->n_conf; i++)
        r = try_dir(d, d->conf_dirs[i], name, origin);
    for (size_t i = 0; r == 0 && default_dirs[i]; i++)
        r = try_dir(d, default_dirs[i], name, origin);
    if (r == 0)
        return why(d, "cannot find the shared library %s", name);
    return r < 0 ? -1 : 0;
}

/* The dynamic section: NEEDED names, string table, RPATH/RUNPATH. */
static int walk_dynamic(struct deps *d, const struct elf_file *e, const Elf64_Phdr *dyn,
                        const char *origin)
{
    size_t n = dyn->p_filesz / sizeof(Elf64_Dyn);
    if (n == 0 || n > 4096)
        return 0;
    _cleanup_free_ Elf64_Dyn *ents = calloc(n, sizeof(*ents));
    if (!ents || !read_at(e->fd, ents, n * sizeof(*ents), (off_t)dyn->p_offset))
        return why(d, "cannot read the dynamic section of %s", origin);
    uint64_t strtab = 0, rpath = 0, runpath = 0;
    bool has_rpath = false, has_runpath = false;
    for (size_t i = 0; i < n && ents[i].d_tag != DT_NULL; i++) {
        if (ents[i].d_tag == DT_STRTAB)
            strtab = ents[i].d_un.d_ptr;
        else if (ents[i].d_tag == DT_RPATH)
            rpath = ents[i].d_un.d_val, has_rpath = true;
        else if (ents[i].d_tag == DT_RUNPATH)
            runpath = ents[i].d_un.d_val, has_runpath = true;
    }
    off_t str_off;
    if (!strtab || !vaddr_off(e, strtab, &str_off))
        return 0;
    char rp[IC_PATH_MAX] = "", rup[IC_PATH_MAX] = "";
    if (has_rpath)
        read_str(e->fd, str_off + (off_t)rpath, rp, sizeof(rp));
    if (has_runpath)
        read_str(e->fd, str_off + (off_t)runpath, rup, sizeof(rup));
    for (size_t i = 0; i < n && ents[i].d_tag != DT_NULL; i++) {
        if (ents[i].d_tag != DT_NEEDED)
            continue;
        char name[256];
        if (!read_str(e->fd, str_off + (off_t)ents[i].d_un.d_val, name, sizeof(name)))
            return why(d, "bad DT_NEEDED entry in %s", origin);
        if (resolve(d, name, has_rpath ? rp : NULL, has_runpath ? rup : NULL, origin) < 0)
            return -1;
    }
    return 0;
}

static int visit(struct deps *d, const char *path)
{
    for (size_t i = 0; i < d->n_seen; i++)
        if (strcmp(d->seen[i], path) == 0)
            return 0;
    if (d->n_seen >= MAX_LIBS)
        return why(d, "more than 256 shared libraries (at %s)", path);
    d->seen[d->n_seen] = strdup(path);
    if (!d->seen[d->n_seen])
        return why(d, "out of memory at %s", path);
    d->n_seen++;
    struct elf_file e;
    int r = elf_open(path, &e);
    if (r != 0) {
        if (e.fd >= 0)
            close(e.fd);
        return r > 0 ? 0 : why(d, "%s is not a readable x86-64 ELF file", path);
    }
    char dir[IC_PATH_MAX];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash && slash != path ? (int)(slash - path) : 1, slash ? path : ".");
    int out = 0;
    for (size_t i = 0; i < e.n_ph && out == 0; i++) {
        if (e.ph[i].p_type == PT_INTERP) {
            char interp[IC_PATH_MAX];
            if (e.ph[i].p_filesz >= sizeof(interp) ||
                !read_at(e.fd, interp, e.ph[i].p_filesz, (off_t)e.ph[i].p_offset))
                out = why(d, "bad PT_INTERP in %s", path);
            else {
                interp[e.ph[i].p_filesz] = '\0';
                out = visit(d, interp);
            }
        } else if (e.ph[i].p_type == PT_DYNAMIC) {
            out = walk_dynamic(d, &e, &e.ph[i], dir);
        }
    }
    close(e.fd);
    if (out == 0 && d->n_seen > 1 && strcmp(d->seen[0], path) != 0)
        out = d->fn(path, d->ud) < 0 ? why(d, "cannot add %s", path) : 0;
    return out;
}

static void conf_file(struct deps *d, const char *file, int depth)
{
    _cleanup_fclose_ FILE *f = fopen(file, "re");
    char line[IC_PATH_MAX];
    while (f && fgets(line, sizeof(line), f)) {
        char *p = line + strspn(line, " \t");
        p[strcspn(p, "#\n")] = '\0';
        size_t len = strlen(p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            p[--len] = '\0';
        if (!len)
            continue;
        if (strncmp(p, "include", 7) == 0 && (p[7] == ' ' || p[7] == '\t')) {
            if (depth > 4)
                continue;
            glob_t g;
            if (glob(p + 8 + strspn(p + 8, " \t"), 0, NULL, &g) == 0)
                for (size_t i = 0; i < g.gl_pathc; i++)
                    conf_file(d, g.gl_pathv[i], depth + 1);
            globfree(&g);
        } else if (p[0] == '/' && d->n_conf < MAX_DIRS) {
            d->conf_dirs[d->n_conf] = strdup(p);
            if (d->conf_dirs[d->n_conf])
                d->n_conf++;
        }
    }
}

int ic_elf_deps(const char *path, ic_elf_dep_fn fn, void *ud, char *why_buf, size_t why_size)
{
    struct deps d = {.fn = fn, .ud = ud, .why = why_buf, .why_size = why_size};
    conf_file(&d, "/etc/ld.so.conf", 0);
    int r = visit(&d, path);
    for (size_t i = 0; i < d.n_seen; i++)
        free(d.seen[i]);
    for (size_t i = 0; i < d.n_conf; i++)
        free(d.conf_dirs[i]);
    return r;
}
