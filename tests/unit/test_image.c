/*
 * test_image.c - the guest image builder (src/image): the newc cpio writer
 * read back byte by byte, module dependency resolution on a fake modules
 * tree of hand-made ELF modules, and whole builds in a temporary data dir
 * with a fake kernel, guest and busybox (tiny static x86-64 executables
 * generated here), including rebuild-only-on-change and `image show`.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ironclaw/fsutil.h"
#include "ironclaw/image.h"

#define RELEASE "9.9.9-test"

/* ---- helpers: files -------------------------------------------------------- */

static void write_bytes(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    chmod(path, mode);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text), 0644);
}

static void mkdirs(const char *path)
{
    assert_int_equal(ic_mkdir_p(path, 0755, NULL), 0);
}

static char *slurp(const char *path, size_t *len)
{
    char *data = NULL;
    assert_int_equal(ic_file_read(path, 64 << 20, &data, len, NULL), 0);
    return data;
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ic-test-image-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

/* ---- helpers: hand-made ELF files ----------------------------------------- */

/* A relocatable ELF64 with a .modinfo section holding `modinfo` (a run of
 * NUL-terminated strings, length given because of the embedded NULs). */
static void make_module(const char *path, const char *modinfo, size_t mlen)
{
    static const char shstr[] = "\0.modinfo\0.shstrtab";
    size_t off_mi = sizeof(Elf64_Ehdr);
    size_t off_ss = off_mi + mlen;
    size_t off_sh = (off_ss + sizeof(shstr) + 7) & ~(size_t)7;
    size_t total = off_sh + 3 * sizeof(Elf64_Shdr);
    uint8_t *f = calloc(1, total);
    assert_non_null(f);
    Elf64_Ehdr eh = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_REL;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_shoff = off_sh;
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_shentsize = sizeof(Elf64_Shdr);
    eh.e_shnum = 3;
    eh.e_shstrndx = 2;
    memcpy(f, &eh, sizeof(eh));
    memcpy(f + off_mi, modinfo, mlen);
    memcpy(f + off_ss, shstr, sizeof(shstr));
    Elf64_Shdr sh[3] = {{0}};
    sh[1].sh_name = 1;
    sh[1].sh_type = SHT_PROGBITS;
    sh[1].sh_offset = off_mi;
    sh[1].sh_size = mlen;
    sh[2].sh_name = 10;
    sh[2].sh_type = SHT_STRTAB;
    sh[2].sh_offset = off_ss;
    sh[2].sh_size = sizeof(shstr);
    memcpy(f + off_sh, sh, sizeof(sh));
    write_bytes(path, f, total, 0644);
    free(f);
}

/* A module in <dir>/<rel> with "depends=<deps>" and a vermagic. */
static void make_mod(const char *dir, const char *rel, const char *deps, const char *release)
{
    char path[4096], info[512];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdirs(path);
    *slash = '/';
    int n = snprintf(info, sizeof(info), "license=GPL%cdepends=%s%c%cvermagic=%s SMP mod_unload %c",
                     0, deps, 0, 0, release, 0);
    make_module(path, info, (size_t)n);
}

/* A static x86-64 executable that writes `out` to stdout and exits 0:
 *   mov eax,1; mov edi,1; lea rsi,[rip+16]; mov edx,len; syscall;
 *   mov eax,60; xor edi,edi; syscall; then the bytes of `out`.
 * With interp, a PT_INTERP header makes it look dynamically linked. */
static void make_exe(const char *path, const char *out, bool interp)
{
    uint32_t len = (uint32_t)strlen(out);
    uint8_t code[33] = {0xb8, 1, 0, 0, 0, 0xbf, 1, 0, 0, 0, 0x48, 0x8d, 0x35, 16, 0, 0, 0,
                        0xba, 0, 0, 0, 0, 0x0f, 0x05, 0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05};
    memcpy(code + 18, &len, 4);
    unsigned nph = interp ? 2 : 1;
    size_t off_code = sizeof(Elf64_Ehdr) + nph * sizeof(Elf64_Phdr);
    static const char interp_path[] = "/lib64/ld-linux-x86-64.so.2";
    size_t total = off_code + sizeof(code) + len + sizeof(interp_path);
    uint8_t *f = calloc(1, total);
    assert_non_null(f);
    const uint64_t base = 0x400000;
    Elf64_Ehdr eh = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_entry = base + off_code;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = (uint16_t)nph;
    memcpy(f, &eh, sizeof(eh));
    Elf64_Phdr ph[2] = {{0}};
    ph[0].p_type = PT_LOAD;
    ph[0].p_flags = PF_R | PF_X;
    ph[0].p_vaddr = ph[0].p_paddr = base;
    ph[0].p_filesz = ph[0].p_memsz = total;
    ph[0].p_align = 0x1000;
    if (interp) {
        ph[1].p_type = PT_INTERP;
        ph[1].p_offset = total - sizeof(interp_path);
        ph[1].p_filesz = ph[1].p_memsz = sizeof(interp_path);
    }
    memcpy(f + sizeof(eh), ph, nph * sizeof(Elf64_Phdr));
    memcpy(f + off_code, code, sizeof(code));
    memcpy(f + off_code + sizeof(code), out, len); // NOLINT(bugprone-not-null-terminated-result): bytes written, no NUL
    memcpy(f + total - sizeof(interp_path), interp_path, sizeof(interp_path));
    write_bytes(path, f, total, 0755);
    free(f);
}

/* A file the bzImage header parser accepts: "HdrS" at 0x202 and a version
 * string pointer at 0x20e. */
static void make_kernel(const char *path, const char *release, char fill)
{
    uint8_t k[4096];
    memset(k, fill, sizeof(k));
    memcpy(k + 0x202, "HdrS", 4);
    k[0x20e] = 0x00;
    k[0x20f] = 0x03;  /* string at 0x300 + 0x200 */
    snprintf((char *)k + 0x500, 128, "%s (builder@test) #1 SMP", release);
    write_bytes(path, k, sizeof(k), 0644);
}

/* ---- helpers: reading a newc archive back -------------------------------- */

struct entry {
    char name[256];
    unsigned ino, mode, nlink, size, rmajor, rminor, uid, gid;
    const uint8_t *data;
};

static unsigned hex8(const uint8_t *p)
{
    char tmp[9];
    memcpy(tmp, p, 8);
    tmp[8] = '\0';
    for (int i = 0; i < 8; i++)
        assert_non_null(strchr("0123456789ABCDEF", tmp[i]));
    return (unsigned)strtoul(tmp, NULL, 16);
}

/* Parses every entry; checks magic, padding and that the trailer is last. */
static size_t parse_cpio(const uint8_t *buf, size_t len, struct entry *out, size_t max)
{
    size_t off = 0, n = 0;
    for (;;) {
        assert_true(off % 4 == 0);
        assert_true(off + 110 <= len);
        assert_memory_equal(buf + off, "070701", 6);
        struct entry e = {0};
        const uint8_t *h = buf + off + 6;
        e.ino = hex8(h);
        e.mode = hex8(h + 8);
        e.uid = hex8(h + 16);
        e.gid = hex8(h + 24);
        e.nlink = hex8(h + 32);
        e.size = hex8(h + 48);
        e.rmajor = hex8(h + 72);
        e.rminor = hex8(h + 80);
        unsigned namesize = hex8(h + 88);
        assert_int_equal(hex8(h + 96), 0);  /* check field unused in newc */
        assert_true(namesize >= 2 && namesize <= sizeof(e.name));
        assert_true(off + 110 + namesize <= len);
        assert_int_equal(buf[off + 110 + namesize - 1], 0);
        memcpy(e.name, buf + off + 110, namesize);
        off += 110 + namesize;
        /* header+name padded to 4, with zero bytes */
        while (off % 4) {
            assert_int_equal(buf[off], 0);
            off++;
        }
        e.data = buf + off;
        assert_true(off + e.size <= len);
        off += e.size;
        while (off % 4) {
            assert_int_equal(buf[off], 0);
            off++;
        }
        if (strcmp(e.name, "TRAILER!!!") == 0) {
            assert_int_equal(off, len);
            return n;
        }
        assert_true(n < max);
        out[n++] = e;
    }
}

static const struct entry *find(const struct entry *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

/* ---- cpio ----------------------------------------------------------------- */

static void test_cpio_roundtrip(void **state)
{
    (void)state;
    char path[] = "/tmp/ic-test-cpio-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    ic_cpio *c;
    ic_err err = {0};
    assert_int_equal(ic_cpio_open(fd, &c, &err), 0);
    assert_int_equal(ic_cpio_add_dir(c, "/etc", 0755, &err), 0);
    assert_int_equal(ic_cpio_add_file(c, "etc/five", 0600, "12345", 5, &err), 0);
    assert_int_equal(ic_cpio_add_file(c, "etc/empty", 0644, "", 0, &err), 0);
    assert_int_equal(ic_cpio_add_symlink(c, "bin/sh", "/bin/busybox", &err), 0);
    assert_int_equal(ic_cpio_add_chardev(c, "dev/console", 0600, 5, 1, &err), 0);
    /* Names that could escape the root are refused. */
    assert_int_equal(ic_cpio_add_file(c, "../evil", 0644, "x", 1, &err), -EINVAL);
    assert_int_equal(ic_cpio_add_dir(c, "a/./b", 0755, &err), -EINVAL);
    assert_int_equal(ic_cpio_add_dir(c, "/", 0755, &err), -EINVAL);
    uint64_t size = 0;
    assert_int_equal(ic_cpio_finish(c, &size, &err), 0);
    close(fd);

    size_t len;
    uint8_t *buf = (uint8_t *)slurp(path, &len);
    unlink(path);
    assert_int_equal(size, len);
    struct entry e[8];
    size_t n = parse_cpio(buf, len, e, 8);
    assert_int_equal(n, 5);

    assert_string_equal(e[0].name, "etc");  /* leading '/' dropped */
    assert_int_equal(e[0].mode, S_IFDIR | 0755);
    assert_int_equal(e[0].nlink, 2);
    assert_int_equal(e[0].size, 0);

    assert_string_equal(e[1].name, "etc/five");
    assert_int_equal(e[1].mode, S_IFREG | 0600);
    assert_int_equal(e[1].size, 5);
    assert_memory_equal(e[1].data, "12345", 5);
    assert_int_equal(e[1].uid, 0);
    assert_int_equal(e[1].gid, 0);

    assert_string_equal(e[2].name, "etc/empty");
    assert_int_equal(e[2].size, 0);

    assert_string_equal(e[3].name, "bin/sh");
    assert_int_equal(e[3].mode, S_IFLNK | 0777);
    assert_int_equal(e[3].size, strlen("/bin/busybox"));
    assert_memory_equal(e[3].data, "/bin/busybox", 12);

    assert_string_equal(e[4].name, "dev/console");
    assert_int_equal(e[4].mode, S_IFCHR | 0600);
    assert_int_equal(e[4].rmajor, 5);
    assert_int_equal(e[4].rminor, 1);

    /* Distinct inode numbers: the kernel would hard-link equal ones. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_int_not_equal(e[i].ino, e[j].ino);
    free(buf);
}

/* ---- ELF ------------------------------------------------------------------ */

static void test_modinfo_and_static(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char p[4096];
    ic_err err = {0};
    char *v = NULL;

    snprintf(p, sizeof(p), "%s/m.ko", dir);
    make_mod(dir, "m.ko", "a,b", RELEASE);
    assert_int_equal(ic_image_modinfo(p, "depends", &v, &err), 0);
    assert_string_equal(v, "a,b");
    free(v);
    assert_int_equal(ic_image_modinfo(p, "vermagic", &v, &err), 0);
    assert_string_equal(v, RELEASE " SMP mod_unload ");
    free(v);
    assert_int_equal(ic_image_modinfo(p, "nosuchkey", &v, &err), 0);
    assert_null(v);
    /* "depend" is a prefix of "depends", not a match. */
    assert_int_equal(ic_image_modinfo(p, "depend", &v, &err), 0);
    assert_null(v);

    snprintf(p, sizeof(p), "%s/text.ko", dir);
    write_text(p, "this is not an ELF file at all, just text that is long enough to read");
    assert_int_equal(ic_image_modinfo(p, "depends", &v, &err), -ENOEXEC);

    snprintf(p, sizeof(p), "%s/static", dir);
    make_exe(p, "hi\n", false);
    assert_int_equal(ic_image_check_static(p, "guest agent", &err), 0);
    /* An executable is not a module. */
    assert_int_equal(ic_image_modinfo(p, "depends", &v, &err), -ENOEXEC);

    snprintf(p, sizeof(p), "%s/dynamic", dir);
    make_exe(p, "hi\n", true);
    assert_int_equal(ic_image_check_static(p, "guest agent", &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "dynamically linked"));
    assert_non_null(strstr(err.msg, "static"));

    snprintf(p, sizeof(p), "%s/text.ko", dir);
    assert_int_equal(ic_image_check_static(p, "guest agent", &err), -ENOEXEC);

    snprintf(p, sizeof(p), "%s/vmlinuz", dir);
    make_kernel(p, RELEASE, 0);
    char rel[128];
    assert_int_equal(ic_image_kernel_release(p, rel, sizeof(rel), &err), 0);
    assert_string_equal(rel, RELEASE);
    snprintf(p, sizeof(p), "%s/static", dir);
    assert_int_equal(ic_image_kernel_release(p, rel, sizeof(rel), &err), -ENOEXEC);

    ic_rm_rf(dir, NULL);
    free(dir);
}

/* ---- module resolution ------------------------------------------------------ */

/* core <- mid-dash <- top (top also needs core and a builtin);
 * other stands alone; comp is compressed; oldabi has another vermagic;
 * needs_ghost depends on a module that exists nowhere. */
static char *fake_modules_tree(const char *root)
{
    char *dir = NULL;
    assert_true(asprintf(&dir, "%s/modules", root) > 0);
    make_mod(dir, "kernel/lib/core.ko", "", RELEASE);
    make_mod(dir, "kernel/drivers/mid-dash.ko", "core", RELEASE);
    make_mod(dir, "kernel/drivers/sub/top.ko", "mid_dash,core,builtin_thing", RELEASE);
    make_mod(dir, "kernel/other.ko", "", RELEASE);
    make_mod(dir, "kernel/oldabi.ko", "", "1.2.3-old");
    make_mod(dir, "kernel/needs_ghost.ko", "core,ghost", RELEASE);
    char p[4096];
    snprintf(p, sizeof(p), "%s/kernel/comp.ko.xz", dir);
    write_text(p, "not really xz");
    snprintf(p, sizeof(p), "%s/modules.builtin", dir);
    write_text(p, "kernel/fs/builtin-thing.ko\nkernel/fs/binfmt_script.ko\n");
    return dir;
}

static void test_resolve_order(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    char *dir = fake_modules_tree(root);
    ic_err err = {0};
    struct ic_modlist l;
    const char *want[] = {"top", "other", "core", "mid-dash"};
    assert_int_equal(ic_image_resolve_modules(dir, RELEASE, want, 4, &l, &err), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.name[0], "core");
    assert_string_equal(l.name[1], "mid_dash");
    assert_string_equal(l.name[2], "top");
    assert_string_equal(l.name[3], "other");
    assert_string_equal(l.relpath[1], "kernel/drivers/mid-dash.ko");
    assert_string_equal(l.relpath[2], "kernel/drivers/sub/top.ko");
    ic_modlist_free(&l);

    /* Stable: independent modules keep the list's order. */
    const char *want2[] = {"other", "core"};
    assert_int_equal(ic_image_resolve_modules(dir, NULL, want2, 2, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.name[0], "other");
    assert_string_equal(l.name[1], "core");
    ic_modlist_free(&l);
    ic_rm_rf(root, NULL);
    free(dir);
    free(root);
}

static void test_resolve_errors(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    char *dir = fake_modules_tree(root);
    ic_err err = {0};
    struct ic_modlist l;

    const char *ghost[] = {"core", "ghost"};
    assert_int_equal(ic_image_resolve_modules(dir, RELEASE, ghost, 2, &l, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "'ghost'"));
    assert_int_equal(l.n, 0);

    const char *dep[] = {"needs_ghost"};
    assert_int_equal(ic_image_resolve_modules(dir, RELEASE, dep, 1, &l, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "'ghost'"));
    assert_non_null(strstr(err.msg, "needed by 'needs_ghost'"));

    const char *comp[] = {"comp"};
    assert_int_equal(ic_image_resolve_modules(dir, RELEASE, comp, 1, &l, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "compressed"));
    assert_non_null(strstr(err.msg, "comp.ko.xz"));

    const char *old[] = {"oldabi"};
    assert_int_equal(ic_image_resolve_modules(dir, RELEASE, old, 1, &l, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "1.2.3-old"));
    /* Without a release to check against, it resolves. */
    assert_int_equal(ic_image_resolve_modules(dir, NULL, old, 1, &l, &err), 0);
    assert_int_equal(l.n, 1);
    ic_modlist_free(&l);

    /* A module built into the kernel is skipped, wanted or depended on. */
    const char *bi[] = {"builtin_thing", "binfmt-script"};
    assert_int_equal(ic_image_resolve_modules(dir, RELEASE, bi, 2, &l, &err), 0);
    assert_int_equal(l.n, 0);
    ic_modlist_free(&l);

    ic_rm_rf(root, NULL);
    free(dir);
    free(root);
}

static void test_modules_list_parse(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    char p[4096];
    snprintf(p, sizeof(p), "%s/modules.list", root);
    write_text(p, "# comment\nvirtio_ring\n\n  virtio   virtio-mmio # trailing\n\tvsock\r\n");
    char **names;
    size_t n;
    ic_err err = {0};
    assert_int_equal(ic_image_read_modules_list(p, &names, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_string_equal(names[0], "virtio_ring");
    assert_string_equal(names[1], "virtio");
    assert_string_equal(names[2], "virtio-mmio");
    assert_string_equal(names[3], "vsock");
    ic_image_free_names(names, n);
    write_text(p, "ok\nbad/name\n");
    assert_int_equal(ic_image_read_modules_list(p, &names, &n, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "bad/name"));

    /* The project's own list parses and names the modules the guest needs. */
    snprintf(p, sizeof(p), "%s/image/modules.list", IC_SOURCE_DIR);
    assert_int_equal(ic_image_read_modules_list(p, &names, &n, &err), 0);
    bool vring = false, vsock = false;
    for (size_t i = 0; i < n; i++) {
        vring |= strcmp(names[i], "virtio_ring") == 0;
        vsock |= strcmp(names[i], "vmw_vsock_virtio_transport") == 0;
    }
    assert_true(vring && vsock);
    ic_image_free_names(names, n);
    ic_rm_rf(root, NULL);
    free(root);
}

/* ---- whole builds ------------------------------------------------------------ */

struct fixture {
    char *root, *data, *guest, *busybox, *list, *kdir;
};

static const char applets[] = "bin/sh\nusr/bin/env\nsbin/poweroff\nbin/busybox\n";

static int setup_build(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->root = make_tmpdir();
    assert_true(asprintf(&f->data, "%s/data", f->root) > 0);
    assert_true(asprintf(&f->guest, "%s/guest", f->root) > 0);
    assert_true(asprintf(&f->busybox, "%s/busybox", f->root) > 0);
    assert_true(asprintf(&f->list, "%s/modules.list", f->root) > 0);
    assert_true(asprintf(&f->kdir, "%s/kernels/linux-image-test", f->data) > 0);
    /* The layout scripts/setup.sh makes: kernels/<pkg>/ and current -> <pkg>. */
    mkdirs(f->kdir);
    char p[4096];
    snprintf(p, sizeof(p), "%s/vmlinuz", f->kdir);
    make_kernel(p, RELEASE, 0x11);
    snprintf(p, sizeof(p), "%s/kernels/current", f->data);
    assert_int_equal(symlink("linux-image-test", p), 0);
    free(fake_modules_tree(f->kdir));
    make_exe(f->guest, "guest v1\n", false);
    /* The fake busybox prints its applet list whatever it is asked, and
     * carries the version tag the builder looks for. */
    make_exe(f->busybox, applets, false);
    static const char tag[] = "BusyBox v9.9.9 (test build) multi-call binary";
    FILE *fp = fopen(f->busybox, "ab");
    assert_non_null(fp);
    fwrite(tag, 1, sizeof(tag), fp);
    fclose(fp);
    write_text(f->list, "top\nother\n");
    setenv("IRONCLAW_DATA_DIR", f->data, 1);
    *state = f;
    return 0;
}

static int teardown_build(void **state)
{
    struct fixture *f = *state;
    ic_rm_rf(f->root, NULL);
    unsetenv("IRONCLAW_DATA_DIR");
    free(f->root);
    free(f->data);
    free(f->guest);
    free(f->busybox);
    free(f->list);
    free(f->kdir);
    free(f);
    return 0;
}

static struct ic_image_build_opts opts_for(const struct fixture *f)
{
    return (struct ic_image_build_opts){
        .guest = f->guest, .busybox = f->busybox, .modules_list = f->list,
    };
}

static int build(const struct fixture *f, bool force, bool *rebuilt, ic_err *err)
{
    struct ic_image_build_opts o = opts_for(f);
    o.force = force;
    struct ic_image_build_result res;
    int r = ic_image_build(&o, &res, err);
    if (r == 0) {
        *rebuilt = res.rebuilt;
        json_t *m = json_loads(res.manifest_json, 0, NULL);
        assert_non_null(m);
        json_decref(m);
        free(res.manifest_json);
    }
    return r;
}

static void skip_unless_x86_64(void)
{
#if !defined(__x86_64__)
    print_message("skipped: the fake guest and busybox are x86-64 executables\n");
    skip();
#endif
}

static void test_locate_missing(void **state)
{
    (void)state;
    struct fixture *f = *state;
    struct ic_image_paths p;
    ic_err err = {0};
    assert_int_equal(ic_image_locate(NULL, &p, &err), -ENOENT);
    assert_string_equal(err.msg, "image 'default' is not built; run `ironclaw image build`");
    json_t *j = NULL;
    assert_int_equal(ic_image_show(f->data, NULL, &j, &err), -ENOENT);
    assert_null(j);
}

static void test_build_contents(void **state)
{
    skip_unless_x86_64();
    struct fixture *f = *state;
    ic_err err = {0};
    bool rebuilt = false;
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    assert_true(rebuilt);

    struct ic_image_paths p;
    assert_int_equal(ic_image_locate("default", &p, &err), 0);
    /* No "release" file next to the fake kernel: read from its header. */
    assert_string_equal(p.release, RELEASE);
    char want[4096];
    snprintf(want, sizeof(want), "%s/images/", f->data);
    assert_memory_equal(p.kernel, want, strlen(want));

    size_t klen, len;
    char *k = slurp(p.kernel, &klen);
    assert_int_equal(klen, 4096);
    assert_int_equal((uint8_t)k[0], 0x11);
    free(k);

    uint8_t *buf = (uint8_t *)slurp(p.initrd, &len);
    struct entry e[256];
    size_t n = parse_cpio(buf, len, e, 256);

    const struct entry *x = find(e, n, "init");
    assert_non_null(x);
    assert_int_equal(x->mode, S_IFREG | 0755);
    size_t glen;
    char *g = slurp(f->guest, &glen);
    assert_int_equal(x->size, glen);
    assert_memory_equal(x->data, g, glen);
    free(g);

    assert_non_null(x = find(e, n, "bin/busybox"));
    assert_int_equal(x->mode, S_IFREG | 0755);
    static const char *const links[] = {"bin/sh", "usr/bin/env", "sbin/poweroff"};
    for (size_t i = 0; i < 3; i++) {
        assert_non_null(x = find(e, n, links[i]));
        assert_int_equal(x->mode, S_IFLNK | 0777);
        assert_memory_equal(x->data, "/bin/busybox", 12);
    }
    static const char *const dirs[] = {"proc", "sys", "dev", "dev/pts", "tmp", "run", "root",
                                       "etc", "etc/ironclaw", "lib/modules", "usr/bin",
                                       "usr/sbin", "sbin"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        assert_non_null(x = find(e, n, dirs[i]));
        assert_true(S_ISDIR(x->mode));
    }
    assert_int_equal(find(e, n, "tmp")->mode, S_IFDIR | 01777);
    assert_non_null(x = find(e, n, "dev/console"));
    assert_int_equal(x->mode & S_IFMT, S_IFCHR);
    assert_int_equal(x->rmajor, 5);
    assert_int_equal(x->rminor, 1);
    assert_non_null(x = find(e, n, "dev/null"));
    assert_int_equal(x->rmajor, 1);
    assert_int_equal(x->rminor, 3);
    assert_non_null(x = find(e, n, "etc/passwd"));
    assert_memory_equal(x->data, "root:x:0:0:", 11);
    assert_non_null(x = find(e, n, "etc/group"));
    assert_memory_equal(x->data, "root:x:0:", 9);

    assert_non_null(x = find(e, n, "etc/ironclaw/modules.order"));
    static const char order[] = "/lib/modules/" RELEASE "/kernel/lib/core.ko\n"
                                "/lib/modules/" RELEASE "/kernel/drivers/mid-dash.ko\n"
                                "/lib/modules/" RELEASE "/kernel/drivers/sub/top.ko\n"
                                "/lib/modules/" RELEASE "/kernel/other.ko\n";
    assert_int_equal(x->size, sizeof(order) - 1);
    assert_memory_equal(x->data, order, sizeof(order) - 1);
    assert_non_null(x = find(e, n, "lib/modules/" RELEASE "/kernel/drivers/sub/top.ko"));
    assert_memory_equal(x->data, ELFMAG, SELFMAG);

    /* Every entry's parent directory comes before it. */
    for (size_t i = 0; i < n; i++) {
        char parent[256];
        snprintf(parent, sizeof(parent), "%s", e[i].name);
        char *slash = strrchr(parent, '/');
        if (!slash)
            continue;
        *slash = '\0';
        const struct entry *pe = find(e, i, parent);
        assert_non_null(pe);
    }
    free(buf);
}

static void test_rebuild_only_on_change(void **state)
{
    skip_unless_x86_64();
    struct fixture *f = *state;
    ic_err err = {0};
    bool rebuilt = false;
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    assert_true(rebuilt);
    struct ic_image_paths first;
    assert_int_equal(ic_image_locate(NULL, &first, &err), 0);

    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    assert_false(rebuilt);
    struct ic_image_paths again;
    assert_int_equal(ic_image_locate(NULL, &again, &err), 0);
    assert_string_equal(first.dir, again.dir);

    /* A new guest agent: rebuilt, and the old version dir is kept one round
     * for readers that resolved it just before. */
    make_exe(f->guest, "guest v2\n", false);
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    assert_true(rebuilt);
    assert_int_equal(ic_image_locate(NULL, &again, &err), 0);
    assert_string_not_equal(first.dir, again.dir);
    assert_true(ic_path_exists(first.initrd));

    /* A changed module list and a changed module both count. */
    write_text(f->list, "top\nother\ncore\n");   /* same modules, new list bytes */
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    assert_true(rebuilt);
    char p[4096];
    snprintf(p, sizeof(p), "%s/modules/kernel/other.ko", f->kdir);
    make_module(p, "depends=\0vermagic=" RELEASE " SMP\0extra=1", 40);
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    assert_true(rebuilt);
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    assert_false(rebuilt);
    /* After several builds only the current and the previous version stay. */
    assert_false(ic_path_exists(first.initrd));

    assert_int_equal(build(f, true, &rebuilt, &err), 0);
    assert_true(rebuilt);

    /* A dynamically linked guest is refused with a reason. */
    make_exe(f->guest, "guest v3\n", true);
    assert_int_equal(build(f, false, &rebuilt, &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "dynamically linked"));
    /* ... and the published image is untouched. */
    assert_int_equal(ic_image_locate(NULL, &again, &err), 0);
}

static void test_show(void **state)
{
    skip_unless_x86_64();
    struct fixture *f = *state;
    ic_err err = {0};
    bool rebuilt;
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    json_t *j = NULL;
    assert_int_equal(ic_image_show(NULL, NULL, &j, &err), 0);
    assert_string_equal(json_string_value(json_object_get(j, "kernel_release")), RELEASE);
    json_t *order = json_object_get(j, "module_order");
    assert_int_equal(json_array_size(order), 4);
    assert_string_equal(json_string_value(json_array_get(order, 0)),
                        "/lib/modules/" RELEASE "/kernel/lib/core.ko");
    json_t *in = json_object_get(j, "inputs");
    assert_string_equal(json_string_value(json_object_get(json_object_get(in, "busybox"), "version")),
                        "9.9.9 (test build)");
    char gsha[IC_SHA256_HEX];
    assert_int_equal(ic_sha256_file(f->guest, gsha, NULL), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(in, "guest"), "sha256")), gsha);
    assert_int_equal(json_integer_value(json_object_get(j, "busybox_applets")), 3);
    assert_non_null(json_string_value(json_object_get(j, "built_at")));
    struct stat st;
    struct ic_image_paths p;
    assert_int_equal(ic_image_locate(NULL, &p, &err), 0);
    assert_int_equal(stat(p.initrd, &st), 0);
    json_t *img = json_object_get(j, "image");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(img, "initrd"), "size")), st.st_size);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(j, "outputs"), "initrd.cpio"), "size")),
                     st.st_size);
    assert_int_equal(json_array_size(json_object_get(j, "changed_inputs")), 0);
    json_decref(j);

    /* Inputs changed since the build are named. */
    make_exe(f->guest, "guest v9\n", false);
    char p2[4096];
    snprintf(p2, sizeof(p2), "%s/modules/kernel/lib/core.ko", f->kdir);
    unlink(p2);
    assert_int_equal(ic_image_show(NULL, NULL, &j, &err), 0);
    json_t *changed = json_object_get(j, "changed_inputs");
    assert_int_equal(json_array_size(changed), 2);
    assert_string_equal(json_string_value(json_array_get(changed, 0)), "guest");
    assert_string_equal(json_string_value(json_array_get(changed, 1)), "module core");
    json_decref(j);
}

static void test_missing_kernel_and_release_file(void **state)
{
    skip_unless_x86_64();
    struct fixture *f = *state;
    ic_err err = {0};
    bool rebuilt;
    /* A release file next to the kernel wins over the header. */
    char p[4096];
    snprintf(p, sizeof(p), "%s/release", f->kdir);
    write_text(p, "1.2.3-old\n");
    assert_int_equal(build(f, false, &rebuilt, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "built for kernel " RELEASE ", not 1.2.3-old"));
    unlink(p);

    snprintf(p, sizeof(p), "%s/kernels/current", f->data);
    unlink(p);
    assert_int_equal(build(f, false, &rebuilt, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "setup"));
    assert_non_null(strstr(err.msg, "--kernel"));
    /* --kernel naming the kernel's directory works instead. */
    struct ic_image_build_opts o = opts_for(f);
    o.kernel = f->kdir;
    struct ic_image_build_result res;
    assert_int_equal(ic_image_build(&o, &res, &err), 0);
    assert_true(res.rebuilt);
    assert_string_equal(res.paths.release, RELEASE);
    free(res.manifest_json);
}

/* Readers racing with builders see whole images: the manifest's recorded
 * initrd size always matches the initrd next to it. */
static void test_concurrent_reader(void **state)
{
    skip_unless_x86_64();
    struct fixture *f = *state;
    ic_err err = {0};
    bool rebuilt = false;
    assert_int_equal(build(f, false, &rebuilt, &err), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < 8; i++) {
            char text[64];
            /* A different length each round, so the initrd size changes. */
            snprintf(text, sizeof(text), "guest %.*s\n", i * 3 + 1, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            make_exe(f->guest, text, false);
            if (build(f, false, &rebuilt, &err) < 0 || !rebuilt)
                _exit(1);
        }
        _exit(0);
    }
    int status = 0, checks = 0;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        struct ic_image_paths p;
        assert_int_equal(ic_image_locate(NULL, &p, &err), 0);
        json_t *m = json_load_file(p.manifest, 0, NULL);
        assert_non_null(m);
        struct stat st;
        /* The previous version is kept, so even a slow reader's files exist. */
        assert_int_equal(stat(p.initrd, &st), 0);
        json_int_t want = json_integer_value(
            json_object_get(json_object_get(json_object_get(m, "outputs"), "initrd.cpio"), "size"));
        assert_int_equal(st.st_size, want);
        json_decref(m);
        checks++;
        if (done == pid)
            break;
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(checks > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpio_roundtrip),
        cmocka_unit_test(test_modinfo_and_static),
        cmocka_unit_test(test_resolve_order),
        cmocka_unit_test(test_resolve_errors),
        cmocka_unit_test(test_modules_list_parse),
        cmocka_unit_test_setup_teardown(test_locate_missing, setup_build, teardown_build),
        cmocka_unit_test_setup_teardown(test_build_contents, setup_build, teardown_build),
        cmocka_unit_test_setup_teardown(test_rebuild_only_on_change, setup_build, teardown_build),
        cmocka_unit_test_setup_teardown(test_show, setup_build, teardown_build),
        cmocka_unit_test_setup_teardown(test_missing_kernel_and_release_file, setup_build,
                                        teardown_build),
        cmocka_unit_test_setup_teardown(test_concurrent_reader, setup_build, teardown_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
