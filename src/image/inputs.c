/*
 * inputs.c - finding and fingerprinting what goes into a guest image: the
 * kernel (and its release and modules dir), the guest agent, busybox and
 * its applet list, and image/modules.list.
 *
 * Lookups never guess silently: each error names the places tried and the
 * option or environment variable that overrides them.
 */
#include "image/image_int.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int ic_image_find_guest(const char *explicit_path, char *out, size_t size, ic_err *err)
{
    if (explicit_path) {
        if (!is_file(explicit_path))
            return ic_err_set(err, ENOENT, "guest agent %s does not exist", explicit_path);
        return ic_path_join(out, size, err, "%s", explicit_path);
    }
    const char *env = getenv("IRONCLAW_GUEST");
    if (env && *env) {
        if (!is_file(env))
            return ic_err_set(err, ENOENT, "IRONCLAW_GUEST names %s, which does not exist", env);
        return ic_path_join(out, size, err, "%s", env);
    }
    char exe[IC_PATH_MAX];
    int r = ic_paths_exe_dir(exe, sizeof(exe), err);
    if (r < 0)
        return r;
    static const char *const rel[] = {"%s/ironclaw-guest", "%s/../libexec/ironclaw/ironclaw-guest"};
    for (size_t i = 0; i < 2; i++) {
        if (ic_path_join(out, size, err, rel[i], exe) < 0)
            return -ENAMETOOLONG;
        if (is_file(out))
            return 0;
    }
    return ic_err_set(err, ENOENT,
                      "cannot find the guest agent ironclaw-guest (looked in %s and "
                      "%s/../libexec/ironclaw); build it, or pass --guest PATH or set IRONCLAW_GUEST",
                      exe, exe);
}

int ic_image_find_modules_list(char *out, size_t size, ic_err *err)
{
    const char *env = getenv("IRONCLAW_MODULES_LIST");
    if (env && *env) {
        if (!is_file(env))
            return ic_err_set(err, ENOENT, "IRONCLAW_MODULES_LIST names %s, which does not exist", env);
        return ic_path_join(out, size, err, "%s", env);
    }
    char exe[IC_PATH_MAX];
    int r = ic_paths_exe_dir(exe, sizeof(exe), err);
    if (r < 0)
        return r;
    /* Installed layout first, then a build directory inside the source tree. */
    static const char *const rel[] = {"%s/../share/ironclaw/modules.list", "%s/../image/modules.list"};
    for (size_t i = 0; i < 2; i++) {
        if (ic_path_join(out, size, err, rel[i], exe) < 0)
            return -ENAMETOOLONG;
        if (is_file(out))
            return 0;
    }
#ifdef IC_SOURCE_DIR
    if (ic_path_join(out, size, err, "%s/image/modules.list", IC_SOURCE_DIR) == 0 && is_file(out))
        return 0;
#endif
    return ic_err_set(err, ENOENT,
                      "cannot find modules.list (looked in %s/../share/ironclaw and %s/../image); "
                      "pass --modules-list PATH or set IRONCLAW_MODULES_LIST", exe, exe);
}

/* The x86 boot protocol puts "HdrS" at 0x202 and, at 0x20e, a 16-bit
 * pointer (minus 0x200) to a NUL-terminated version string whose first
 * word is the release. */
int ic_image_kernel_release(const char *path, char *out, size_t size, ic_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open kernel %s", path);
    unsigned char hdr[0x210];
    if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || memcmp(hdr + 0x202, "HdrS", 4) != 0)
        return ic_err_set(err, ENOEXEC, "%s is not an x86 bzImage kernel", path);
    unsigned off = (unsigned)hdr[0x20e] | ((unsigned)hdr[0x20f] << 8);
    char ver[256] = {0};
    if (off == 0 || pread(fd, ver, sizeof(ver) - 1, (off_t)off + 0x200) <= 0)
        return ic_err_set(err, ENOEXEC, "%s carries no kernel version string", path);
    size_t n = strcspn(ver, " \n");
    if (n == 0 || n >= size)
        return ic_err_set(err, ENOEXEC, "%s carries no usable kernel version string", path);
    memcpy(out, ver, n);
    out[n] = '\0';
    return 0;
}

/* Trimmed first line of a small text file. */
static int read_line(const char *path, char *out, size_t size, ic_err *err)
{
    _cleanup_free_ char *text = NULL;
    int r = ic_file_read(path, 4096, &text, NULL, err);
    if (r < 0)
        return r;
    size_t n = strcspn(text, "\r\n");
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= size)
        return ic_err_set(err, EINVAL, "%s does not hold a kernel release", path);
    memcpy(out, text, n);
    out[n] = '\0';
    return 0;
}

/* Kernel: --kernel PATH (a vmlinuz or the directory holding one), else
 * <data>/kernels/current/vmlinuz as scripts/setup.sh extracts it. Its
 * release comes from a "release" file next to it or from the bzImage
 * header; its modules from "modules" next to it or /lib/modules/<release>. */
static int find_kernel(const struct ic_image_build_opts *o, const char *data, struct ic_image_inputs *in,
                       ic_err *err)
{
    char want[IC_PATH_MAX];
    int r;
    if (o->kernel) {
        r = ic_path_join(want, sizeof(want), err, "%s%s", o->kernel, is_dir(o->kernel) ? "/vmlinuz" : "");
        if (r == 0 && !is_file(want))
            r = ic_err_set(err, ENOENT, "kernel %s does not exist", want);
    } else {
        r = ic_path_join(want, sizeof(want), err, "%s/kernels/current/vmlinuz", data);
        if (r == 0 && !is_file(want))
            r = ic_err_set(err, ENOENT,
                           "no guest kernel at %s; run scripts/setup.sh (make setup) as root, "
                           "or pass --kernel PATH", want);
    }
    if (r < 0)
        return r;
    if (!realpath(want, in->kernel))
        return ic_err_sys(err, errno, "cannot resolve %s", want);
    char kdir[IC_PATH_MAX];
    snprintf(kdir, sizeof(kdir), "%s", in->kernel);
    *strrchr(kdir, '/') = '\0';

    char probe[IC_PATH_MAX];
    /* An ELF kernel is a vmlinux already (Firecracker's format). */
    in->kernel_elf = ic_image_check_vmlinux(in->kernel, NULL) == 0;
    if (ic_path_join(probe, sizeof(probe), err, "%s/config", kdir) == 0 && is_file(probe))
        snprintf(in->kernel_config, sizeof(in->kernel_config), "%s", probe);
    if (o->release)
        r = ic_path_join(in->release, sizeof(in->release), err, "%s", o->release);
    else if (ic_path_join(probe, sizeof(probe), err, "%s/release", kdir) == 0 && is_file(probe))
        r = read_line(probe, in->release, sizeof(in->release), err);
    else if (in->kernel_elf)
        r = ic_image_vmlinux_release(in->kernel, in->release, sizeof(in->release), err);
    else
        r = ic_image_kernel_release(in->kernel, in->release, sizeof(in->release), err);
    if (r < 0)
        return r;
    /* The release becomes a path component in the image: nothing odd. */
    if (strchr(in->release, '/') || in->release[0] == '.')
        return ic_err_set(err, EINVAL, "'%s' is not a kernel release", in->release);

    if (o->modules_dir)
        r = ic_path_join(in->modules_dir, sizeof(in->modules_dir), err, "%s", o->modules_dir);
    else if (ic_path_join(probe, sizeof(probe), err, "%s/modules", kdir) == 0 && is_dir(probe))
        r = ic_path_join(in->modules_dir, sizeof(in->modules_dir), err, "%s", probe);
    else
        r = ic_path_join(in->modules_dir, sizeof(in->modules_dir), err, "/lib/modules/%s", in->release);
    if (r == 0 && !is_dir(in->modules_dir))
        r = ic_err_set(err, ENOENT, "no modules directory for kernel %s (looked for %s)",
                       in->release, in->modules_dir);
    return r;
}

/* "BusyBox v1.35.0 (Debian ...)" is embedded in the binary: reading it
 * needs no execution. */
static void busybox_version(const char *path, char *out, size_t size)
{
    snprintf(out, size, "unknown");
    _cleanup_free_ char *bin = NULL;
    size_t len = 0;
    if (ic_file_read(path, 64 << 20, &bin, &len, NULL) < 0)
        return;
    static const char tag[] = "BusyBox v";
    const char *p = memmem(bin, len, tag, sizeof(tag) - 1);
    if (!p)
        return;
    p += sizeof(tag) - 1;
    size_t n = 0;
    while (p + n < bin + len && n < size - 1 && p[n] >= ' ' && p[n] < 127)
        n++;
    const char *close = memchr(p, ')', n);
    if (close)
        n = (size_t)(close - p) + 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* Runs `busybox --list-full` (which prints "bin/ls", "usr/bin/env", ...),
 * with a deadline: a broken binary must not hang the build. */
static int busybox_applets(const char *busybox, char **out, ic_err *err)
{
    size_t cap = 16384, len = 0;
    _cleanup_free_ char *buf = malloc(cap + 1);
    if (!buf)
        return ic_err_set(err, ENOMEM, "out of memory");
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return ic_err_sys(err, errno, "cannot create a pipe"); // NOLINT(clang-analyzer-unix.Malloc): freed by _cleanup_free_
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return ic_err_sys(err, errno, "cannot fork");
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0)
            dup2(null, 0);
        dup2(fds[1], 1);
        execl(busybox, "busybox", "--list-full", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    _cleanup_close_ int rd = fds[0];
    int r = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (r == 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = 10000 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd pfd = {.fd = rd, .events = POLLIN};
        int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            r = ic_err_set(err, ETIMEDOUT, "%s --list-full did not finish within 10 s", busybox);
            break;
        }
        if (len == cap) {
            if (cap >= (1 << 20)) {
                r = ic_err_set(err, EFBIG, "%s --list-full printed too much", busybox);
                break;
            }
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                r = ic_err_set(err, ENOMEM, "out of memory");
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(rd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            r = ic_err_sys(err, errno, "cannot read from %s", busybox);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    if (r < 0)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return r;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return ic_err_set(err, EINVAL, "%s --list-full failed (status %d); is it busybox?", busybox,
                          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    buf[len] = '\0';
    if (len == 0)
        return ic_err_set(err, EINVAL, "%s --list-full printed no applets; is it busybox?", busybox);
    *out = TAKE_PTR(buf);
    return 0;
}

static int hash_input(const char *path, struct ic_image_hashed *h, ic_err *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return ic_err_sys(err, errno, "cannot stat %s", path);
    h->size = (uint64_t)st.st_size;
    return ic_sha256_file(path, h->sha256, err);
}

/* One digest over everything that determines the image's bytes: equal
 * digests mean an identical rebuild, so it can be skipped. Paths are left
 * out on purpose: the same kernel found elsewhere is the same input. */
static void inputs_digest(struct ic_image_inputs *in)
{
    size_t cap = 1024 + in->modules.n * 256, len = 0;
    char *text = malloc(cap);
    if (!text) {
        snprintf(in->digest, sizeof(in->digest), "unavailable");
        return;
    }
    len += (size_t)snprintf(text + len, cap - len, "format=%d\nrelease=%s\nkernel=%s\nguest=%s\n"
                            "busybox=%s\nmodules_list=%s\nconfig=%s\n", IC_IMAGE_FORMAT,
                            in->release, in->kernel_h.sha256, in->guest_h.sha256,
                            in->busybox_h.sha256, in->modules_list_h.sha256, in->config_h.sha256);
    for (size_t i = 0; i < in->modules.n && len < cap; i++)
        len += (size_t)snprintf(text + len, cap - len, "module=%s %s %s\n", in->modules.name[i],
                                in->modules.relpath[i], in->module_h[i].sha256);
    ic_sha256_hex(text, len < cap ? len : cap, in->digest);
    free(text);
}

int ic_image_inputs_gather(const struct ic_image_build_opts *o, const char *data,
                           struct ic_image_inputs *in, ic_err *err)
{
    memset(in, 0, sizeof(*in));
    int r = find_kernel(o, data, in, err);
    if (r == 0)
        r = ic_image_find_guest(o->guest, in->guest, sizeof(in->guest), err);
    if (r == 0)
        r = ic_image_check_static(in->guest, "guest agent", err);
    if (r == 0)
        r = ic_path_join(in->busybox, sizeof(in->busybox), err, "%s", o->busybox ? o->busybox : "/bin/busybox");
    if (r == 0 && !is_file(in->busybox))
        r = ic_err_set(err, ENOENT, "%s does not exist; install Debian's busybox-static package",
                       in->busybox);
    if (r == 0 && (r = ic_image_check_static(in->busybox, "busybox", err)) < 0)
        ic_err_wrap(err, "install Debian's busybox-static (not busybox)");
    if (r == 0)
        r = o->modules_list ? ic_path_join(in->modules_list, sizeof(in->modules_list), err, "%s", o->modules_list)
                            : ic_image_find_modules_list(in->modules_list, sizeof(in->modules_list), err);
    /* Absolute, symlink-free paths: the manifest should say what was used. */
    char *const canon_paths[] = {in->guest, in->busybox, in->modules_list};
    for (size_t i = 0; r == 0 && i < 3; i++) {
        char real[IC_PATH_MAX];
        if (!realpath(canon_paths[i], real))
            r = ic_err_sys(err, errno, "cannot resolve %s", canon_paths[i]);
        else
            snprintf(canon_paths[i], IC_PATH_MAX, "%s", real);
    }
    char **names = NULL;
    size_t nnames = 0;
    if (r == 0)
        r = ic_image_read_modules_list(in->modules_list, &names, &nnames, err);
    if (r == 0)
        r = ic_image_resolve_modules(in->modules_dir, in->release, (const char *const *)names, nnames,
                                     &in->modules, err);
    ic_image_free_names(names, nnames);
    if (r == 0 && in->modules.n) {
        in->module_h = calloc(in->modules.n, sizeof(*in->module_h));
        if (!in->module_h)
            r = ic_err_set(err, ENOMEM, "out of memory");
    }
    for (size_t i = 0; r == 0 && i < in->modules.n; i++) {
        char p[IC_PATH_MAX];
        r = ic_path_join(p, sizeof(p), err, "%s/%s", in->modules_dir, in->modules.relpath[i]);
        if (r == 0)
            r = hash_input(p, &in->module_h[i], err);
    }
    if (r == 0)
        r = hash_input(in->kernel, &in->kernel_h, err);
    if (r == 0)
        r = hash_input(in->guest, &in->guest_h, err);
    if (r == 0)
        r = hash_input(in->busybox, &in->busybox_h, err);
    if (r == 0)
        r = hash_input(in->modules_list, &in->modules_list_h, err);
    if (r == 0 && in->kernel_config[0])
        r = hash_input(in->kernel_config, &in->config_h, err);
    if (r < 0) {
        ic_image_inputs_free(in);
        return r;
    }
    busybox_version(in->busybox, in->busybox_version, sizeof(in->busybox_version));
    inputs_digest(in);
    return 0;
}

int ic_image_inputs_applets(struct ic_image_inputs *in, ic_err *err)
{
    if (in->applets)
        return 0;
    return busybox_applets(in->busybox, &in->applets, err);
}

void ic_image_inputs_free(struct ic_image_inputs *in)
{
    ic_modlist_free(&in->modules);
    free(in->module_h);
    free(in->applets);
    in->module_h = NULL;
    in->applets = NULL;
}
