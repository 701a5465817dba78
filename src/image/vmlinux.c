/*
 * vmlinux.c - the kernel as Firecracker wants it, and whether a kernel can
 * work with Firecracker at all.
 *
 * Firecracker (x86-64) loads an uncompressed ELF vmlinux, not a bzImage.
 * A bzImage carries the vmlinux compressed: the boot header says where
 * (payload_offset and payload_length, boot protocol 2.08+), the payload's
 * magic says how (gzip, xz, zstd, lz4, bzip2, lzma, lzo). The payload is
 * decompressed by the matching Debian tool in a child process; the result
 * counts only if it is a sound x86-64 ELF executable. Kernels too old for
 * the payload fields are scanned for the compression magics instead.
 *
 * The configuration check reads the kernel's config (the file
 * scripts/setup.sh keeps next to the kernel, copied into the image) and
 * says what would stop Firecracker: virtio-mmio devices the kernel cannot
 * find, no vsock, no initramfs support.
 */
#include "image/image_int.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define DECOMPRESS_TIMEOUT_S 120
#define SCAN_CANDIDATES_MAX 16

/* ---- ELF check -------------------------------------------------------------- */

int ic_image_check_vmlinux(const char *path, ic_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", path);
    struct stat st;
    Elf64_Ehdr eh;
    if (fstat(fd, &st) < 0 || pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh))
        return ic_err_set(err, ENOEXEC, "%s is not an ELF file (too short)", path);
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
        return ic_err_set(err, ENOEXEC, "%s is not an ELF file (a bzImage? Firecracker needs the "
                          "uncompressed vmlinux)", path);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
        eh.e_machine != EM_X86_64 || eh.e_type != ET_EXEC)
        return ic_err_set(err, ENOEXEC, "%s is not an x86-64 ELF executable", path);
    uint64_t size = (uint64_t)st.st_size;
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phoff > size ||
        (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > size - eh.e_phoff)
        return ic_err_set(err, ENOEXEC, "%s has damaged program headers", path);
    int loads = 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) != (ssize_t)sizeof(ph))
            return ic_err_set(err, ENOEXEC, "%s has damaged program headers", path);
        if (ph.p_type != PT_LOAD)
            continue;
        if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset || ph.p_filesz > ph.p_memsz)
            return ic_err_set(err, ENOEXEC, "%s: a loadable segment lies outside the file", path);
        loads++;
    }
    if (loads == 0)
        return ic_err_set(err, ENOEXEC, "%s has nothing to load", path);
    return 0;
}

/* ---- the payload ------------------------------------------------------------ */

struct codec {
    const char *name;
    const unsigned char magic[6];
    size_t magic_len;
    const char *tool;
    const char *args[4];
    const char *package;
};

static const struct codec CODECS[] = {
    {"gzip", {0x1f, 0x8b, 0x08}, 3, "gzip", {"-dc", NULL}, "gzip"},
    {"xz", {0xfd, '7', 'z', 'X', 'Z', 0x00}, 6, "xz", {"-dc", "--single-stream", NULL}, "xz-utils"},
    {"zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4, "zstd", {"-dcq", NULL}, "zstd"},
    {"lz4", {0x02, 0x21, 0x4c, 0x18}, 4, "lz4", {"-dcq", NULL}, "lz4"},
    {"bzip2", {'B', 'Z', 'h'}, 3, "bzip2", {"-dc", NULL}, "bzip2"},
    {"lzma", {0x5d, 0x00, 0x00}, 3, "xz", {"-dc", "--format=lzma", NULL}, "xz-utils"},
    {"lzo", {0x89, 'L', 'Z', 'O', 0x00}, 5, "lzop", {"-dc", NULL}, "lzop"},
};

static const struct codec *codec_at(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < sizeof(CODECS) / sizeof(CODECS[0]); i++)
        if (n >= CODECS[i].magic_len && memcmp(p, CODECS[i].magic, CODECS[i].magic_len) == 0)
            return &CODECS[i];
    return NULL;
}

static int find_tool(const char *name, char *out, size_t size)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path && *path ? path : "/usr/bin:/bin");
    if (!copy)
        return -ENOMEM;
    int r = -ENOENT;
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d && r < 0;
         d = strtok_r(NULL, ":", &save)) {
        if (d[0] == '/' && ic_path_join(out, size, NULL, "%s/%s", d, name) == 0 &&
            access(out, X_OK) == 0)
            r = 0;
    }
    free(copy);
    return r;
}

/* Runs `tool args` with stdin from in_path and stdout to out_path; its
 * exit status is not trusted (trailing bytes after the stream make some
 * tools complain): the caller checks what came out. */
static int run_decompressor(const struct codec *c, const char *in_path, const char *out_path,
                            ic_err *err)
{
    char tool[IC_PATH_MAX];
    if (find_tool(c->tool, tool, sizeof(tool)) < 0)
        return ic_err_set(err, ENOENT, "the kernel is %s-compressed but %s is not installed "
                          "(Debian package %s)", c->name, c->tool, c->package);
    _cleanup_close_ int in = open(in_path, O_RDONLY | O_CLOEXEC);
    _cleanup_close_ int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || out < 0)
        return ic_err_sys(err, errno, "cannot open files for decompressing the kernel");
    const char *argv[6] = {c->tool};
    for (size_t i = 0; c->args[i]; i++)
        argv[i + 1] = c->args[i];
    pid_t pid = fork();
    if (pid < 0)
        return ic_err_sys(err, errno, "cannot fork");
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(in, 0);
        dup2(out, 1);
        if (null >= 0)
            dup2(null, 2);
        execv(tool, (char *const *)argv);
        _exit(127);
    }
    int status;
    for (int waited = 0;; waited++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR))
            break;
        if (waited >= DECOMPRESS_TIMEOUT_S * 20) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return ic_err_set(err, ETIMEDOUT, "%s did not finish within %d s", c->tool,
                              DECOMPRESS_TIMEOUT_S);
        }
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Writes bytes [off, off+len) of the file open as fd to path. */
static int write_slice(int fd, uint64_t off, uint64_t len, const char *path, ic_err *err)
{
    _cleanup_close_ int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0)
        return ic_err_sys(err, errno, "cannot create %s", path);
    char buf[65536];
    while (len > 0) {
        ssize_t n = pread(fd, buf, len < sizeof(buf) ? (size_t)len : sizeof(buf), (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ic_err_set(err, EIO, "cannot read the kernel's compressed payload");
        int r = ic_write_all(out, buf, (size_t)n);
        if (r < 0)
            return ic_err_sys(err, -r, "cannot write %s", path);
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* Decompresses the candidate at [off, off+len) and keeps it if it is a vmlinux. */
static int try_candidate(int fd, uint64_t off, uint64_t len, const struct codec *c,
                         const char *out, ic_err *err)
{
    char tmp[IC_PATH_MAX];
    int r = ic_path_join(tmp, sizeof(tmp), err, "%s.payload", out);
    if (r == 0)
        r = write_slice(fd, off, len, tmp, err);
    if (r == 0)
        r = run_decompressor(c, tmp, out, err);
    unlink(tmp);
    if (r == 0)
        r = ic_image_check_vmlinux(out, err);
    if (r < 0)
        unlink(out);
    return r;
}

int ic_image_extract_vmlinux(const char *bzimage, const char *out, char *how, size_t how_size,
                             ic_err *err)
{
    _cleanup_close_ int fd = open(bzimage, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open kernel %s", bzimage);
    struct stat st;
    unsigned char hdr[0x260];
    if (fstat(fd, &st) < 0 || pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
        memcmp(hdr + 0x202, "HdrS", 4) != 0)
        return ic_err_set(err, ENOEXEC, "%s is not an x86 bzImage", bzimage);
    uint64_t size = (uint64_t)st.st_size;
    unsigned version = hdr[0x206] | (unsigned)hdr[0x207] << 8;
    unsigned setup_sects = hdr[0x1f1] ? hdr[0x1f1] : 4;
    uint64_t pm_start = (uint64_t)(setup_sects + 1) * 512;
    uint32_t poff, plen;
    memcpy(&poff, hdr + 0x248, 4);
    memcpy(&plen, hdr + 0x24c, 4);
    if (version >= 0x208 && plen > 0 && pm_start + poff < size && plen <= size - pm_start - poff) {
        unsigned char magic[8] = {0};
        if (pread(fd, magic, sizeof(magic), (off_t)(pm_start + poff)) != (ssize_t)sizeof(magic))
            return ic_err_set(err, EIO, "cannot read %s", bzimage);
        const struct codec *c = codec_at(magic, sizeof(magic));
        if (!c)
            return ic_err_set(err, ENOTSUP, "%s: the kernel payload uses a compression ironclaw "
                              "does not know (magic %02x %02x %02x %02x)", bzimage, magic[0],
                              magic[1], magic[2], magic[3]);
        snprintf(how, how_size, "%s payload of %s", c->name, bzimage);
        int r = try_candidate(fd, pm_start + poff, plen, c, out, err);
        return r < 0 ? ic_err_wrap(err, "extracting the vmlinux (%s)", c->name) : 0;
    }
    /* Old boot protocol: look for a compressed stream that decompresses to
     * a vmlinux, the way the kernel's scripts/extract-vmlinux does. */
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    int r = ic_file_read(bzimage, 256u << 20, &data, &len, err);
    if (r < 0)
        return r;
    int tried = 0;
    for (size_t i = 0; i + 8 <= len && tried < SCAN_CANDIDATES_MAX; i++) {
        const struct codec *c = codec_at((const unsigned char *)data + i, len - i);
        if (!c)
            continue;
        tried++;
        ic_err e = {0};
        if (try_candidate(fd, i, len - i, c, out, &e) == 0) {
            snprintf(how, how_size, "%s stream at offset %zu of %s", c->name, i, bzimage);
            return 0;
        }
        if (e.code == ENOENT) {
            if (err)
                *err = e;
            return -ENOENT;
        }
    }
    return ic_err_set(err, ENOEXEC, "no compressed vmlinux found in %s", bzimage);
}

/* "Linux version 6.1.0-57-cloud-amd64 (...)" as the kernel's banner has it. */
int ic_image_vmlinux_release(const char *path, char *out, size_t size, ic_err *err)
{
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    int r = ic_file_read(path, 512u << 20, &data, &len, err);
    if (r < 0)
        return r;
    if (!data)
        return ic_err_set(err, ENOMEM, "out of memory");
    static const char tag[] = "Linux version ";
    for (const char *p = data; (p = memmem(p, len - (size_t)(p - data), tag, sizeof(tag) - 1));
         p++) {
        const char *v = p + sizeof(tag) - 1;
        size_t n = 0;
        while (v + n < data + len && v[n] > ' ' && v[n] < 0x7f && n < size - 1)
            n++;
        /* The banner has "(" after the release; a format string has "%s". */
        if (n > 0 && v[0] >= '0' && v[0] <= '9' && v + n + 1 < data + len && v[n] == ' ' &&
            v[n + 1] == '(') {
            memcpy(out, v, n);
            out[n] = '\0';
            return 0;
        }
    }
    return ic_err_set(err, ENOEXEC, "%s carries no kernel version banner", path);
}

/* ---- configuration check ------------------------------------------------------ */

/* "y", "m" or "" for CONFIG_<name> in a .config text. */
static const char *config_value(const char *text, const char *name)
{
    char key[96];
    int n = snprintf(key, sizeof(key), "CONFIG_%s=", name);
    for (const char *p = text; (p = strstr(p, key)); p += n) {
        if (p != text && p[-1] != '\n')
            continue;
        char v = p[n];
        return v == 'y' ? "y" : v == 'm' ? "m" : "";
    }
    return "";
}

static void add(char *list, size_t size, const char *sentence)
{
    size_t len = strlen(list);
    snprintf(list + len, size - len, "%s%s", len ? "; " : "", sentence);
}

void ic_image_fc_check_config(const char *text, const char *const *modules, size_t nmodules,
                              struct ic_image_fc_report *rep)
{
    static const struct {
        const char *opt, *module, *why;
    } need[] = {
        {"BLK_DEV_INITRD", NULL, "initramfs support (the guest agent lives there)"},
        {"VIRTIO_MMIO", "virtio_mmio", "virtio-mmio, the only bus Firecracker offers"},
        {"VSOCKETS", "vsock", "vsock sockets (the host channel)"},
        {"VIRTIO_VSOCKETS", "vmw_vsock_virtio_transport", "the virtio vsock transport"},
    };
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        const char *v = config_value(text, need[i].opt);
        char s[256];
        bool builtin_only = need[i].module == NULL;
        if (!*v || (builtin_only && strcmp(v, "y") != 0)) {
            snprintf(s, sizeof(s), "CONFIG_%s%s is not set: %s", need[i].opt,
                     builtin_only ? "=y" : "", need[i].why);
            add(rep->problems, sizeof(rep->problems), s);
            continue;
        }
        if (strcmp(v, "m") != 0 || !modules || !need[i].module)
            continue;
        bool have = false;
        for (size_t k = 0; k < nmodules && !have; k++)
            have = modules[k] && strcmp(modules[k], need[i].module) == 0;
        if (!have) {
            snprintf(s, sizeof(s), "CONFIG_%s=m but the image carries no %s module (add it to "
                     "image/modules.list)", need[i].opt, need[i].module);
            add(rep->problems, sizeof(rep->problems), s);
        }
    }
    if (strcmp(config_value(text, "VIRTIO_MMIO_CMDLINE_DEVICES"), "y") != 0) {
        if (strcmp(config_value(text, "ACPI"), "y") == 0)
            add(rep->warnings, sizeof(rep->warnings),
                "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set: only a Firecracker that describes "
                "its devices with ACPI (v1.8 and later) lets this kernel find them");
        else
            add(rep->problems, sizeof(rep->problems),
                "neither CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES nor CONFIG_ACPI is set: the kernel "
                "cannot find Firecracker's virtio devices");
    }
    if (strcmp(config_value(text, "SERIAL_8250_CONSOLE"), "y") != 0)
        add(rep->warnings, sizeof(rep->warnings),
            "CONFIG_SERIAL_8250_CONSOLE is not set: no guest console in console.log");
    if (strcmp(config_value(text, "KVM_GUEST"), "y") != 0)
        add(rep->warnings, sizeof(rep->warnings),
            "CONFIG_KVM_GUEST is not set: the guest lacks the KVM clock");
    if (!*config_value(text, "VIRTIO_BLK"))
        add(rep->warnings, sizeof(rep->warnings), "CONFIG_VIRTIO_BLK is not set: no --drive");
    rep->ok = rep->problems[0] == '\0';
}

int ic_image_fc_check(const struct ic_image_paths *p, struct ic_image_fc_report *rep, ic_err *err)
{
    memset(rep, 0, sizeof(*rep));
    if (!p->vmlinux[0]) {
        add(rep->problems, sizeof(rep->problems),
            "the image has no vmlinux (run `ironclaw image build --force`)");
    } else {
        ic_err e = {0};
        if (ic_image_check_vmlinux(p->vmlinux, &e) < 0)
            add(rep->problems, sizeof(rep->problems), e.msg);
    }
    int r = ic_path_join(rep->config, sizeof(rep->config), err, "%s/config", p->dir);
    if (r < 0)
        return r;
    _cleanup_free_ char *text = NULL;
    if (ic_file_read(rep->config, 8u << 20, &text, NULL, NULL) < 0) {
        rep->config[0] = '\0';
        add(rep->warnings, sizeof(rep->warnings),
            "the kernel's config is unknown (no config file next to the kernel it was built "
            "from), so its options were not checked");
        rep->ok = rep->problems[0] == '\0';
        return 0;
    }
    /* The modules the image carries, by name, from its manifest. */
    json_t *m = json_load_file(p->manifest, 0, NULL);
    json_t *mods = json_object_get(json_object_get(m, "inputs"), "modules");
    size_t n = json_array_size(mods);
    const char **names = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; names && i < n; i++)
        names[i] = json_string_value(json_object_get(json_array_get(mods, i), "name")) ?: "";
    ic_image_fc_check_config(text, names, names ? n : 0, rep);
    free(names);
    json_decref(m);
    return 0;
}
