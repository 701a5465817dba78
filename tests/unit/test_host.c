/*
 * test_host.c - the host probe and the VMM choice (src/vm/host.c), on fake
 * hosts laid out in a temporary directory: /proc, /sys and /dev files under
 * a root prefix, and programs in a private PATH.
 */
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
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ironclaw/fsutil.h"
#include "ironclaw/host.h"

struct fake {
    char root[64];
    char bin[128];
};

static void put(struct fake *f, const char *rel, const char *text, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", f->root, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    assert_int_equal(ic_mkdir_p(path, 0755, NULL), 0);
    *slash = '/';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    chmod(path, mode);
}

static void program(struct fake *f, const char *name)
{
    char rel[128];
    snprintf(rel, sizeof(rel), "bin/%s", name);
    put(f, rel, "#!/bin/sh\nexit 0\n", 0755);
}

static const char CPU_VMX[] =
    "processor\t: 0\nvendor_id\t: GenuineIntel\n"
    "flags\t\t: fpu vme de pse tsc msr vmx ept lm\n"
    "vmx flags\t: vnmi preemption_timer invvpid ept_x_only\n\n"
    "processor\t: 1\nflags\t\t: fpu vme de pse tsc msr vmx ept lm\n";
/* No vmx/svm in "flags" (the "vmx flags" line and svm_lock do not count). */
static const char CPU_NONE[] =
    "processor\t: 0\nvmx flags\t: vnmi\nflags\t\t: fpu vme svm_lock hypervisor lm\n";

static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof(*f));
    snprintf(f->root, sizeof(f->root), "/tmp/ic-test-host-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->bin, sizeof(f->bin), "%s/bin", f->root);
    assert_int_equal(mkdir(f->bin, 0755), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fake *f = *state;
    ic_rm_rf(f->root, NULL);
    free(f);
    return 0;
}

static void probe(struct fake *f, struct ic_host *h)
{
    struct ic_host_probe_opts o = {.root = f->root, .path = f->bin};
    ic_err err = {0};
    assert_int_equal(ic_host_probe(&o, h, &err), 0);
}

struct pick {
    int r;
    const char *driver;
    bool kvm;
    char why[512];
    ic_err err;
};

static struct pick pick(const struct ic_host *h, const char *req)
{
    struct pick p = {0};
    p.r = ic_host_pick_vmm(h, req, &p.driver, &p.kvm, p.why, sizeof(p.why), &p.err);
    return p;
}

static void test_vmx_and_kvm_rw_gives_kvm(void **state)
{
    struct fake *f = *state;
    put(f, "proc/cpuinfo", CPU_VMX, 0644);
    put(f, "dev/kvm", "", 0666);
    program(f, "qemu-system-x86_64");
    struct ic_host h;
    probe(f, &h);
    assert_true(h.hw_virt);
    assert_string_equal(h.hw_virt_flag, "vmx");
    assert_false(h.hypervisor);
    assert_true(h.kvm_present);
    assert_true(h.kvm_rw);
    assert_true(h.kvm_usable);
    char want[256];
    snprintf(want, sizeof(want), "%s/qemu-system-x86_64", f->bin);
    assert_string_equal(h.qemu, want);
    assert_string_equal(h.firecracker, "");

    struct pick p = pick(&h, "auto");
    assert_int_equal(p.r, 0);
    assert_string_equal(p.driver, "qemu");
    assert_true(p.kvm);
    assert_non_null(strstr(p.why, "vmx"));
    p = pick(&h, NULL);
    assert_int_equal(p.r, 0);
    assert_true(p.kvm);
}

static void test_kvm_without_flags_gives_tcg(void **state)
{
    struct fake *f = *state;
    put(f, "proc/cpuinfo", CPU_NONE, 0644);
    put(f, "dev/kvm", "", 0666);
    program(f, "qemu-system-x86_64");
    struct ic_host h;
    probe(f, &h);
    assert_false(h.hw_virt);
    assert_true(h.hypervisor);
    assert_true(h.kvm_present);
    assert_true(h.kvm_rw);
    assert_false(h.kvm_usable);

    struct pick p = pick(&h, "auto");
    assert_int_equal(p.r, 0);
    assert_string_equal(p.driver, "qemu");
    assert_false(p.kvm);
    assert_non_null(strstr(p.why, "no vmx or svm"));
    assert_non_null(strstr(p.why, "TCG"));
    p = pick(&h, "qemu");
    assert_int_equal(p.r, 0);
    assert_false(p.kvm);

    /* svm on its own is hardware virtualisation too. */
    put(f, "proc/cpuinfo", "flags\t: fpu svm svm_lock\n", 0644);
    probe(f, &h);
    assert_true(h.kvm_usable);
    assert_string_equal(h.hw_virt_flag, "svm");

    /* No /dev/kvm at all: TCG, and the sentence says so. */
    char kvm[256];
    snprintf(kvm, sizeof(kvm), "%s/dev/kvm", f->root);
    unlink(kvm);
    probe(f, &h);
    assert_false(h.kvm_present);
    p = pick(&h, "auto");
    assert_int_equal(p.r, 0);
    assert_false(p.kvm);
    assert_non_null(strstr(p.why, "no /dev/kvm"));
}

static void test_firecracker_needs_hw_virt(void **state)
{
    struct fake *f = *state;
    put(f, "proc/cpuinfo", CPU_VMX, 0644);
    put(f, "dev/kvm", "", 0666);
    program(f, "qemu-system-x86_64");
    program(f, "firecracker");
    program(f, "jailer");
    struct ic_host h;
    probe(f, &h);
    assert_true(h.firecracker[0] != '\0');
    assert_true(h.jailer[0] != '\0');
    assert_string_equal(h.seccompiler, "");

    struct pick p = pick(&h, "auto");
    assert_int_equal(p.r, 0);
    assert_string_equal(p.driver, "firecracker");
    assert_true(p.kvm);
    p = pick(&h, "qemu");
    assert_int_equal(p.r, 0);
    assert_string_equal(p.driver, "qemu");
    assert_true(p.kvm);

    /* Same host without vmx: auto falls back to qemu with TCG; an explicit
     * firecracker request is let through, and why says KVM is missing. */
    put(f, "proc/cpuinfo", CPU_NONE, 0644);
    probe(f, &h);
    p = pick(&h, "auto");
    assert_int_equal(p.r, 0);
    assert_string_equal(p.driver, "qemu");
    assert_false(p.kvm);
    assert_non_null(strstr(p.why, "firecracker is installed but needs KVM"));
    p = pick(&h, "firecracker");
    assert_int_equal(p.r, 0);
    assert_string_equal(p.driver, "firecracker");
    assert_non_null(strstr(p.why, "KVM is not usable"));
    assert_non_null(strstr(p.why, "vmx or svm"));

    /* Firecracker requested but not installed. */
    char fc[256];
    snprintf(fc, sizeof(fc), "%s/firecracker", f->bin);
    unlink(fc);
    put(f, "proc/cpuinfo", CPU_VMX, 0644);
    probe(f, &h);
    p = pick(&h, "firecracker");
    assert_int_equal(p.r, -ENOENT);
    assert_non_null(strstr(p.err.msg, "firecracker is not installed"));
    p = pick(&h, "kvmtool");
    assert_int_equal(p.r, -EINVAL);
}

static void test_qemu_missing(void **state)
{
    struct fake *f = *state;
    put(f, "proc/cpuinfo", CPU_NONE, 0644);
    put(f, "dev/kvm", "", 0666);
    /* Present but not executable does not count. */
    put(f, "bin/qemu-system-x86_64", "", 0644);
    struct ic_host h;
    probe(f, &h);
    assert_string_equal(h.qemu, "");

    struct pick p = pick(&h, "qemu");
    assert_int_equal(p.r, -ENOENT);
    assert_non_null(strstr(p.err.msg, "qemu-system-x86"));
    assert_non_null(strstr(p.err.msg, "Debian package"));
    p = pick(&h, "auto");
    assert_int_equal(p.r, -ENOENT);
    assert_non_null(strstr(p.err.msg, "no VMM can run"));

    /* With firecracker but no KVM, both reasons are given. */
    program(f, "firecracker");
    probe(f, &h);
    p = pick(&h, "auto");
    assert_int_equal(p.r, -ENOENT);
    assert_non_null(strstr(p.err.msg, "qemu-system-x86"));
    assert_non_null(strstr(p.err.msg, "firecracker is installed but"));
}

static void test_programs_on_path(void **state)
{
    struct fake *f = *state;
    char other[256], path[600];
    snprintf(other, sizeof(other), "%s/sbin", f->root);
    assert_int_equal(mkdir(other, 0755), 0);
    put(f, "sbin/nft", "", 0755);
    put(f, "sbin/iptables", "", 0755);
    put(f, "bin/iptables", "", 0755);   /* first PATH entry wins */
    put(f, "sbin/iptables-restore", "", 0755);
    put(f, "sbin/seccompiler-bin", "", 0755);
    /* relative and empty entries are ignored */
    snprintf(path, sizeof(path), "sbin::%s:%s", f->bin, other);
    struct ic_host_probe_opts o = {.root = f->root, .path = path};
    struct ic_host h;
    assert_int_equal(ic_host_probe(&o, &h, NULL), 0);
    char want[300];
    snprintf(want, sizeof(want), "%s/nft", other);
    assert_string_equal(h.nft, want);
    snprintf(want, sizeof(want), "%s/iptables", f->bin);
    assert_string_equal(h.iptables, want);
    assert_true(h.iptables_restore[0] != '\0');
    assert_true(h.seccompiler[0] != '\0');
    assert_string_equal(h.qemu, "");
}

static void test_cgroup_versions(void **state)
{
    struct fake *f = *state;
    struct ic_host h;
    probe(f, &h);
    assert_int_equal(h.cgroup, IC_CGROUP_NONE);
    assert_string_equal(ic_cgroup_mode_name(h.cgroup), "none");

    /* v1: one hierarchy per controller, each with cgroup.procs. */
    put(f, "sys/fs/cgroup/memory/cgroup.procs", "", 0644);
    put(f, "sys/fs/cgroup/pids/cgroup.procs", "", 0644);
    put(f, "sys/fs/cgroup/cpu/cgroup.procs", "", 0644);
    put(f, "sys/fs/cgroup/systemd/cgroup.procs", "", 0644);
    put(f, "sys/fs/cgroup/notes/readme", "", 0644);   /* not a hierarchy */
    probe(f, &h);
    assert_int_equal(h.cgroup, IC_CGROUP_V1);
    assert_string_equal(h.cgroup_controllers, "cpu memory pids");

    /* hybrid: plus a v2 tree at unified/ */
    put(f, "sys/fs/cgroup/unified/cgroup.procs", "", 0644);
    put(f, "sys/fs/cgroup/unified/cgroup.controllers", "", 0644);
    probe(f, &h);
    assert_int_equal(h.cgroup, IC_CGROUP_HYBRID);
    assert_string_equal(ic_cgroup_mode_name(h.cgroup), "hybrid");
    assert_string_equal(h.cgroup_controllers, "cpu memory pids");

    /* v2: cgroup.controllers at the root wins. */
    put(f, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n", 0644);
    probe(f, &h);
    assert_int_equal(h.cgroup, IC_CGROUP_V2);
    assert_string_equal(h.cgroup_controllers, "cpuset cpu io memory pids");
}

static void test_identity_and_features(void **state)
{
    struct fake *f = *state;
    put(f, "proc/self/status",
        "Name:\tironclaw\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n"
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\n", 0644);
    put(f, "proc/sys/kernel/seccomp/actions_avail", "kill_process kill_thread trap errno log allow\n", 0644);
    put(f, "proc/sys/user/max_user_namespaces", "15000\n", 0644);
    put(f, "proc/sys/kernel/osrelease", "6.1.0-test\n", 0644);
    put(f, "dev/vhost-vsock", "", 0666);
    struct ic_host h;
    probe(f, &h);
    assert_false(h.is_root);
    assert_true(h.cap_net_admin);
    assert_false(h.cap_sys_admin);
    assert_int_equal(h.cap_eff, 0x1000);
    assert_true(h.seccomp);
    assert_string_equal(h.seccomp_actions, "kill_process kill_thread trap errno log allow");
    assert_true(h.userns);
    assert_string_equal(h.kernel_release, "6.1.0-test");
    assert_true(h.vhost_vsock_present);
    assert_true(h.vhost_vsock_rw);
    assert_false(h.kvm_present);

    /* Root with all capabilities; Debian's switch turns userns off. */
    put(f, "proc/self/status", "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n", 0644);
    put(f, "proc/sys/kernel/unprivileged_userns_clone", "0\n", 0644);
    probe(f, &h);
    assert_true(h.is_root);
    assert_true(h.cap_net_admin);
    assert_true(h.cap_sys_admin);
    assert_false(h.userns);

    json_t *j = ic_host_to_json(&h);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(json_object_get(j, "privileges"), "root")));
    assert_true(json_is_null(json_object_get(json_object_get(j, "programs"), "qemu-system-x86_64")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "cgroup"), "version")), "none");
    json_decref(j);

    /* Nothing at all: no seccomp, no userns, nothing found; not an error. */
    teardown(state);
    setup(state);
    f = *state;
    probe(f, &h);
    assert_false(h.seccomp);
    assert_false(h.userns);
    assert_false(h.hw_virt);
    assert_false(h.is_root);
}

/* The real host: whatever it offers, the probe must be self-consistent. */
static void test_real_host_consistent(void **state)
{
    (void)state;
    struct ic_host h;
    ic_err err = {0};
    assert_int_equal(ic_host_probe(NULL, &h, &err), 0);
    assert_int_equal(h.kvm_usable, h.hw_virt && h.kvm_rw);
    assert_int_equal(h.is_root, geteuid() == 0);
    const char *driver;
    bool kvm;
    char why[512];
    if (ic_host_pick_vmm(&h, "auto", &driver, &kvm, why, sizeof(why), &err) == 0) {
        assert_true(why[0] != '\0');
        if (kvm)
            assert_true(h.hw_virt);
    } else {
        assert_string_equal(h.qemu, "");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vmx_and_kvm_rw_gives_kvm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kvm_without_flags_gives_tcg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_firecracker_needs_hw_virt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_programs_on_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cgroup_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_and_features, setup, teardown),
        cmocka_unit_test(test_real_host_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
