/*
 * host.c - probing the host (CPU flags, KVM and vhost devices, VMM and
 * firewall programs, cgroups, capabilities, seccomp, user namespaces) and
 * choosing the VMM driver from what was found.
 *
 * Every path is read under a root prefix and programs are searched in a
 * given PATH, so tests can describe a fake host. The probe only reads.
 */
#include "ironclaw/host.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define CAP_NET_ADMIN_BIT 12
#define CAP_SYS_ADMIN_BIT 21
#define SBIN_DIRS "/usr/local/sbin:/usr/sbin:/sbin"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct probe {
    const char *root;
    char buf[IC_PATH_MAX];
};

/* root + path, into p->buf; NULL if it does not fit (then it is "absent"). */
static const char *at(struct probe *p, const char *path)
{
    if (ic_path_join(p->buf, sizeof(p->buf), NULL, "%s%s", p->root, path) < 0)
        return NULL;
    return p->buf;
}

static char *read_small(struct probe *p, const char *path, size_t max)
{
    const char *full = at(p, path);
    char *text = NULL;
    if (!full || ic_file_read(full, max, &text, NULL, NULL) < 0)
        return NULL;
    return text;
}

static bool exists(struct probe *p, const char *path)
{
    const char *full = at(p, path);
    return full && ic_path_exists(full);
}

static bool opens_rw(struct probe *p, const char *path)
{
    const char *full = at(p, path);
    if (!full)
        return false;
    int fd = open(full, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* True if `word` appears as a whole blank-separated word in s. */
static bool has_word(const char *s, const char *word)
{
    size_t n = strlen(word);
    for (const char *q = s; (q = strstr(q, word)); q += n) {
        bool start = q == s || q[-1] == ' ' || q[-1] == '\t';
        bool end = q[n] == '\0' || q[n] == ' ' || q[n] == '\t' || q[n] == '\n';
        if (start && end)
            return true;
    }
    return false;
}

static void probe_cpu(struct probe *p, struct ic_host *h)
{
    _cleanup_free_ char *info = read_small(p, "/proc/cpuinfo", 8 << 20);
    if (!info)
        return;
    /* The first "flags" line is enough: all CPUs of a host share them. */
    for (char *save = NULL, *line = strtok_r(info, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "flags", 5) != 0 || !strchr(line, ':'))
            continue;
        const char *flags = strchr(line, ':') + 1;
        if (has_word(flags, "vmx"))
            snprintf(h->hw_virt_flag, sizeof(h->hw_virt_flag), "vmx");
        else if (has_word(flags, "svm"))
            snprintf(h->hw_virt_flag, sizeof(h->hw_virt_flag), "svm");
        h->hw_virt = h->hw_virt_flag[0] != '\0';
        h->hypervisor = has_word(flags, "hypervisor");
        h->stable_tsc = has_word(flags, "constant_tsc") && has_word(flags, "nonstop_tsc");
        break;
    }
}

static void find_program(const char *path, const char *name, char *out)
{
    out[0] = '\0';
    _cleanup_free_ char *copy = strdup(path);
    if (!copy)
        return;
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): copy is freed by _cleanup_free_ */
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char cand[IC_PATH_MAX];
        struct stat st;
        if (dir[0] != '/')
            continue;   /* relative PATH entries depend on the cwd: ignore */
        if (ic_path_join(cand, sizeof(cand), NULL, "%s/%s", dir, name) < 0)
            continue;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) {
            snprintf(out, IC_PATH_MAX, "%s", cand);
            return;
        }
    }
}

/* $name, when set, replaces what PATH gave: an absolute path to an
 * executable file, else "" (a named program that cannot run is missing). */
static void program_from_env(const char *name, char *out)
{
    const char *v = getenv(name);
    struct stat st;
    if (!v || !*v)
        return;
    out[0] = '\0';
    if (v[0] == '/' && strlen(v) < IC_PATH_MAX && stat(v, &st) == 0 && S_ISREG(st.st_mode) &&
        access(v, X_OK) == 0)
        snprintf(out, IC_PATH_MAX, "%s", v);
}

static void append_word(char *list, size_t size, const char *word)
{
    size_t len = strlen(list);
    snprintf(list + len, size - len, "%s%s", len ? " " : "", word);
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* v2: cgroup.controllers at the root. v1: hierarchies below the root that
 * have cgroup.procs but no cgroup.controllers. Both: hybrid. */
static void probe_cgroup(struct probe *p, struct ic_host *h)
{
    char *ctl = read_small(p, "/sys/fs/cgroup/cgroup.controllers", 4096);
    if (ctl) {
        ctl[strcspn(ctl, "\n")] = '\0';
        snprintf(h->cgroup_controllers, sizeof(h->cgroup_controllers), "%s", ctl);
        free(ctl);
        h->cgroup = IC_CGROUP_V2;
        return;
    }
    const char *base = at(p, "/sys/fs/cgroup");
    DIR *d = base ? opendir(base) : NULL;
    if (!d)
        return;
    char basecopy[IC_PATH_MAX];
    snprintf(basecopy, sizeof(basecopy), "%s", base);
    bool v1 = false;
    struct dirent *de;
    /* readdir order is arbitrary; collect then sort for a stable listing. */
    char *names[64] = {0};
    size_t n = 0;
    while ((de = readdir(d)) && n < 64) {
        if (de->d_name[0] == '.')
            continue;
        char f[IC_PATH_MAX], g[IC_PATH_MAX];
        struct stat st;
        if (ic_path_join(f, sizeof(f), NULL, "%s/%s", basecopy, de->d_name) < 0 ||
            lstat(f, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;   /* "cpu -> cpu,cpuacct" style links would list twice */
        if (ic_path_join(g, sizeof(g), NULL, "%s/cgroup.procs", f) < 0 || !ic_path_exists(g))
            continue;
        if (ic_path_join(g, sizeof(g), NULL, "%s/cgroup.controllers", f) == 0 && ic_path_exists(g))
            continue;   /* a v2 tree (the hybrid layout's "unified") */
        v1 = true;
        /* "systemd" is a named hierarchy without a controller. */
        if (strcmp(de->d_name, "systemd") != 0 && (names[n] = strdup(de->d_name)))
            n++;
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), by_string);
    for (size_t i = 0; i < n; i++) {
        append_word(h->cgroup_controllers, sizeof(h->cgroup_controllers), names[i]);
        free(names[i]);
    }
    if (v1)
        h->cgroup = exists(p, "/sys/fs/cgroup/unified/cgroup.controllers") ? IC_CGROUP_HYBRID : IC_CGROUP_V1;
}

static void probe_identity(struct probe *p, struct ic_host *h)
{
    _cleanup_free_ char *st = read_small(p, "/proc/self/status", 1 << 20);
    if (!st)
        return;
    for (char *save = NULL, *line = strtok_r(st, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned long ruid, euid;
        uint64_t caps;
        if (sscanf(line, "Uid: %lu %lu", &ruid, &euid) == 2)
            h->is_root = euid == 0;
        else if (sscanf(line, "CapEff: %" SCNx64, &caps) == 1)
            h->cap_eff = caps;
    }
    h->cap_net_admin = (h->cap_eff >> CAP_NET_ADMIN_BIT) & 1;
    h->cap_sys_admin = (h->cap_eff >> CAP_SYS_ADMIN_BIT) & 1;
}

static void probe_kernel_features(struct probe *p, struct ic_host *h)
{
    char *s = read_small(p, "/proc/sys/kernel/seccomp/actions_avail", 4096);
    if (s) {
        s[strcspn(s, "\n")] = '\0';
        snprintf(h->seccomp_actions, sizeof(h->seccomp_actions), "%s", s);
        h->seccomp = has_word(s, "kill_process") || has_word(s, "kill_thread") || has_word(s, "errno");
        free(s);
    }
    /* Debian's switch (absent upstream: allowed), then the namespace limit
     * (absent: user namespaces are not built into the kernel). */
    s = read_small(p, "/proc/sys/kernel/unprivileged_userns_clone", 64);
    bool clone_ok = !s || atoi(s) != 0;
    free(s);
    s = read_small(p, "/proc/sys/user/max_user_namespaces", 64);
    h->userns = clone_ok && s && atol(s) > 0;
    free(s);
    s = read_small(p, "/proc/sys/kernel/osrelease", 256);
    if (s) {
        s[strcspn(s, "\n")] = '\0';
        snprintf(h->kernel_release, sizeof(h->kernel_release), "%s", s);
        free(s);
    }
}

int ic_host_probe(const struct ic_host_probe_opts *opts, struct ic_host *h, ic_err *err)
{
    memset(h, 0, sizeof(*h));
    struct probe p = {.root = opts && opts->root ? opts->root : ""};
    if (strlen(p.root) > IC_PATH_MAX / 2)
        return ic_err_set(err, ENAMETOOLONG, "host probe root prefix is too long");

    probe_cpu(&p, h);
    h->kvm_present = exists(&p, "/dev/kvm");
    h->kvm_rw = h->kvm_present && opens_rw(&p, "/dev/kvm");
    h->kvm_usable = h->hw_virt && h->kvm_rw;
    h->vhost_vsock_present = exists(&p, "/dev/vhost-vsock");
    h->vhost_vsock_rw = h->vhost_vsock_present && opens_rw(&p, "/dev/vhost-vsock");

    _cleanup_free_ char *path = NULL;
    if (opts && opts->path) {
        path = strdup(opts->path);
    } else {
        /* nft and iptables live in sbin, which a user's PATH often lacks. */
        const char *env = getenv("PATH");
        if (asprintf(&path, "%s:%s", env && *env ? env : DEFAULT_PATH, SBIN_DIRS) < 0)
            path = NULL;
    }
    if (!path)
        return ic_err_set(err, ENOMEM, "out of memory");
    find_program(path, "qemu-system-x86_64", h->qemu);
    find_program(path, "firecracker", h->firecracker);
    find_program(path, "jailer", h->jailer);
    find_program(path, "seccompiler-bin", h->seccompiler);
    if (!opts || !opts->path) {
        /* The real host: Firecracker's programs may be named explicitly. */
        program_from_env("IRONCLAW_FIRECRACKER", h->firecracker);
        program_from_env("IRONCLAW_JAILER", h->jailer);
        program_from_env("IRONCLAW_SECCOMPILER", h->seccompiler);
    }
    find_program(path, "nft", h->nft);
    find_program(path, "iptables", h->iptables);
    find_program(path, "iptables-restore", h->iptables_restore);

    probe_cgroup(&p, h);
    probe_identity(&p, h);
    probe_kernel_features(&p, h);
    return 0;
}

/* ---- TSC frequency --------------------------------------------------------- */

#if defined(__x86_64__) || defined(__i386__)
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One measurement over `window_ns`; the clock reads are bracketed by TSC
 * reads so a preemption in between shows up as a wide bracket. */
static double tsc_sample(uint64_t window_ns, uint64_t *bracket)
{
    uint64_t a0 = __builtin_ia32_rdtsc(), t0 = now_ns(), a1 = __builtin_ia32_rdtsc();
    uint64_t t1;
    do
        t1 = now_ns();
    while (t1 - t0 < window_ns);
    uint64_t b0 = __builtin_ia32_rdtsc();
    t1 = now_ns();
    uint64_t b1 = __builtin_ia32_rdtsc();
    *bracket = (a1 - a0) + (b1 - b0);
    /* Ticks between the brackets' midpoints, halved in double: no tick lost. */
    return (double)((b0 - a0) + (b1 - a1)) / 2 * 1e6 / (double)(t1 - t0);
}

/* The best of three samples: the one least disturbed by preemption. */
static uint32_t tsc_measure_khz(void)
{
    uint64_t best_bracket = UINT64_MAX;
    double best = 0;
    for (int i = 0; i < 3; i++) {
        uint64_t bracket;
        double khz = tsc_sample(2000000, &bracket);
        if (bracket < best_bracket) {
            best_bracket = bracket;
            best = khz;
        }
    }
    return best > 1000 && best < 100e6 ? (uint32_t)(best + 0.5) : 0;
}

uint32_t ic_host_tsc_khz(const struct ic_host *h)
{
    /* Measured once per process: the rate does not change, and each
     * measurement spins the caller (the event loop) for 6 ms. Two threads
     * racing here both measure; either result is right. */
    static uint32_t measured;
    if (!h->stable_tsc)
        return 0;
    uint32_t khz = __atomic_load_n(&measured, __ATOMIC_RELAXED);
    if (khz == 0) {
        khz = tsc_measure_khz();
        __atomic_store_n(&measured, khz, __ATOMIC_RELAXED);
    }
    return khz;
}
#else
uint32_t ic_host_tsc_khz(const struct ic_host *h)
{
    return 0;
}
#endif

const char *ic_cgroup_mode_name(enum ic_cgroup_mode m)
{
    switch (m) {
    case IC_CGROUP_V1: return "v1";
    case IC_CGROUP_V2: return "v2";
    case IC_CGROUP_HYBRID: return "hybrid";
    default: return "none";
    }
}

/* ---- driver choice -------------------------------------------------------- */

/* Why KVM cannot be used, as the end of a sentence. */
static const char *no_kvm_reason(const struct ic_host *h)
{
    if (!h->hw_virt && h->kvm_present)
        return "/dev/kvm exists but the CPU flags show no vmx or svm (nested or paravirtualised KVM, "
               "where a stock guest kernel hangs)";
    if (!h->hw_virt)
        return "the CPU flags show no vmx or svm and there is no /dev/kvm";
    if (!h->kvm_present)
        return "there is no /dev/kvm (load the kvm_intel or kvm_amd module)";
    return "/dev/kvm is not read/write for this user (add the user to the kvm group)";
}

static const char *QEMU_MISSING =
    "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)";

static int pick_qemu(const struct ic_host *h, bool from_auto, const char **driver, bool *use_kvm,
                     char *why, size_t why_size, ic_err *err)
{
    if (!h->qemu[0])
        return ic_err_set(err, ENOENT, "%s%s", QEMU_MISSING,
                          from_auto ? (h->firecracker[0] ? "; firecracker is installed but needs KVM, and "
                                                           : "; firecracker is not installed either")
                                    : "");
    *driver = "qemu";
    *use_kvm = h->kvm_usable;
    const char *fc = !from_auto ? ""
                     : h->firecracker[0] ? " (firecracker is installed but needs KVM)"
                                         : " (firecracker is not installed)";
    if (h->kvm_usable)
        snprintf(why, why_size, "the CPU has hardware virtualisation (%s) and /dev/kvm is read/write%s",
                 h->hw_virt_flag, fc);
    else
        snprintf(why, why_size, "%s, so qemu emulates the CPU with TCG%s", no_kvm_reason(h), fc);
    return 0;
}

int ic_host_pick_vmm(const struct ic_host *h, const char *requested, const char **driver,
                     bool *use_kvm, char *why, size_t why_size, ic_err *err)
{
    if (why_size)
        why[0] = '\0';
    if (!requested || strcmp(requested, "auto") == 0) {
        if (h->firecracker[0] && h->kvm_usable) {
            *driver = "firecracker";
            *use_kvm = true;
            snprintf(why, why_size,
                     "firecracker is installed, the CPU has hardware virtualisation (%s) and /dev/kvm is read/write",
                     h->hw_virt_flag);
            return 0;
        }
        /* If auto fails, say which piece is missing for each driver. */
        int r = pick_qemu(h, true, driver, use_kvm, why, why_size, err);
        if (r < 0 && h->firecracker[0])
            ic_err_set(err, ENOENT, "no VMM can run here: %s; firecracker is installed but %s",
                       QEMU_MISSING, no_kvm_reason(h));
        else if (r < 0)
            ic_err_set(err, ENOENT, "no VMM can run here: %s, and firecracker is not installed",
                       QEMU_MISSING);
        return r;
    }
    if (strcmp(requested, "qemu") == 0)
        return pick_qemu(h, false, driver, use_kvm, why, why_size, err);
    if (strcmp(requested, "firecracker") == 0) {
        if (!h->firecracker[0])
            return ic_err_set(err, ENOENT,
                              "firecracker is not installed (it is not packaged by Debian: put the "
                              "firecracker binary on PATH or name it with IRONCLAW_FIRECRACKER), or "
                              "use --vmm qemu");
        *driver = "firecracker";
        *use_kvm = true;
        /* Asked for by name, it runs: where KVM is missing Firecracker
         * itself says so, and that answer reaches the user. */
        if (h->kvm_usable)
            snprintf(why, why_size, "firecracker was requested and KVM is usable (%s, /dev/kvm read/write)",
                     h->hw_virt_flag);
        else
            snprintf(why, why_size, "firecracker was requested although KVM is not usable (%s); "
                     "it will fail unless it can use KVM after all", no_kvm_reason(h));
        return 0;
    }
    return ic_err_set(err, EINVAL, "unknown VMM '%s' (auto, qemu or firecracker)", requested);
}

/* ---- JSON ------------------------------------------------------------------ */

static json_t *path_or_null(const char *p)
{
    return p[0] ? json_string(p) : json_null();
}

json_t *ic_host_to_json(const struct ic_host *h)
{
    char caps[32];
    snprintf(caps, sizeof(caps), "%016" PRIx64, h->cap_eff);
    return json_pack(
        "{s:{s:b,s:s,s:b,s:b},s:{s:b,s:b,s:b},s:{s:b,s:b},"
        "s:{s:o,s:o,s:o,s:o,s:o,s:o,s:o},"
        "s:{s:s,s:s},s:{s:b,s:s,s:b,s:b},s:{s:b,s:s},s:b,s:s}",
        "cpu", "hw_virt", h->hw_virt, "flag", h->hw_virt_flag, "hypervisor", h->hypervisor,
        "stable_tsc", h->stable_tsc,
        "kvm", "present", h->kvm_present, "rw", h->kvm_rw, "usable", h->kvm_usable,
        "vhost_vsock", "present", h->vhost_vsock_present, "rw", h->vhost_vsock_rw,
        "programs", "qemu-system-x86_64", path_or_null(h->qemu), "firecracker",
        path_or_null(h->firecracker), "jailer", path_or_null(h->jailer), "seccompiler-bin",
        path_or_null(h->seccompiler), "nft", path_or_null(h->nft), "iptables",
        path_or_null(h->iptables), "iptables-restore", path_or_null(h->iptables_restore),
        "cgroup", "version", ic_cgroup_mode_name(h->cgroup), "controllers", h->cgroup_controllers,
        "privileges", "root", h->is_root, "cap_eff", caps, "cap_net_admin", h->cap_net_admin,
        "cap_sys_admin", h->cap_sys_admin,
        "seccomp", "available", h->seccomp, "actions", h->seccomp_actions,
        "unprivileged_userns", h->userns, "kernel_release", h->kernel_release);
}
