/*
 * cmd_doctor.c - `ironclaw doctor`: one table of what this host offers
 * (from ic_host_probe), whether the guest kernel and image are there, and
 * which VMM "auto" picks and why. Exit 0 when some driver can run.
 */
#include "cli/cli.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/host.h"
#include "ironclaw/image.h"
#include "ironclaw/paths.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

enum status { ST_OK, ST_MISSING, ST_NO, ST_WARN };

static const char *const status_name[] = {"ok", "missing", "no", "warn"};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw doctor [--json]\n"
            "\n"
            "Probes this host (hardware virtualisation, /dev/kvm, VMM and firewall\n"
            "programs, cgroups, privileges, seccomp, user namespaces, the guest image)\n"
            "and says which VMM 'auto' picks and why. Changes nothing.\n"
            "Exit status: 0 when at least one VMM driver can run, %d otherwise.\n"
            "\n"
            "Options:\n"
            "      --json   the same data as JSON on stdout\n"
            "  -h, --help   this help\n",
            IC_EXIT_SETUP);
}

/* Each row is added to the JSON list and printed unless --json. */
struct table {
    json_t *items;
    bool json;
};

static void row(struct table *t, const char *item, enum status st, const char *value, const char *hint)
{
    json_array_append_new(t->items, json_pack("{s:s,s:s,s:s,s:s}", "item", item, "status",
                                              status_name[st], "value", value, "hint", hint ? hint : ""));
    if (t->json)
        return;
    if (hint && *hint)
        printf("  %-20s %-8s %-36s %s\n", item, status_name[st], value, hint);
    else
        printf("  %-20s %-8s %s\n", item, status_name[st], value);
}

static void program_row(struct table *t, const char *name, const char *path, const char *hint)
{
    row(t, name, path[0] ? ST_OK : ST_MISSING, path[0] ? path : "-", path[0] ? NULL : hint);
}

static void cpu_rows(struct table *t, const struct ic_host *h)
{
    char v[128];
    if (h->hw_virt)
        snprintf(v, sizeof(v), "%s%s", h->hw_virt_flag, h->hypervisor ? " (nested)" : "");
    else
        snprintf(v, sizeof(v), "no vmx/svm flag%s", h->hypervisor ? " (we are a VM guest)" : "");
    row(t, "hardware virt", h->hw_virt ? ST_OK : ST_NO, v,
        h->hw_virt ? NULL
        : h->kvm_present ? "nested/paravirtualised KVM: stock guests hang under it, so TCG is used"
                         : "qemu will emulate the CPU (TCG): slower, but works");
    row(t, "/dev/kvm", h->kvm_rw ? ST_OK : ST_MISSING,
        h->kvm_rw ? "read/write" : h->kvm_present ? "present, not read/write" : "absent",
        h->kvm_rw || !h->kvm_present ? NULL : "add this user to the kvm group");
    row(t, "KVM usable", h->kvm_usable ? ST_OK : ST_NO, h->kvm_usable ? "yes" : "no",
        h->kvm_usable ? NULL : "needs both vmx/svm and a read/write /dev/kvm");
    uint32_t khz = ic_host_tsc_khz(h);
    if (khz)
        snprintf(v, sizeof(v), "%u kHz", khz);
    row(t, "TSC frequency", khz ? ST_OK : ST_NO, khz ? v : "not stable or not measurable",
        khz ? "measured; TCG guests get it as tsc_early_khz="
            : "TCG guests calibrate their TSC themselves (may fail on a busy host)");
    row(t, "/dev/vhost-vsock", h->vhost_vsock_rw ? ST_OK : ST_MISSING,
        h->vhost_vsock_rw ? "read/write" : h->vhost_vsock_present ? "present, not read/write" : "absent",
        h->vhost_vsock_rw ? NULL : "optional: 'modprobe vhost_vsock' for AF_VSOCK channels");
}

static void isolation_rows(struct table *t, const struct ic_host *h)
{
    char v[512];
    if (h->cgroup == IC_CGROUP_NONE)
        snprintf(v, sizeof(v), "not mounted");
    else
        snprintf(v, sizeof(v), "%s (%s%s)", ic_cgroup_mode_name(h->cgroup),
                 h->cgroup_controllers[0] ? h->cgroup_controllers : "no controllers",
                 h->cgroup == IC_CGROUP_HYBRID ? "; v2 tree at /sys/fs/cgroup/unified" : "");
    row(t, "cgroups", h->cgroup == IC_CGROUP_NONE ? ST_MISSING : ST_OK, v,
        h->cgroup == IC_CGROUP_NONE ? "mount cgroup2 at /sys/fs/cgroup for VM limits" : NULL);
    row(t, "root", h->is_root ? ST_OK : ST_NO, h->is_root ? "euid 0" : "not root",
        h->is_root ? NULL : "networking, jails and cgroups need root");
    row(t, "CAP_NET_ADMIN", h->cap_net_admin ? ST_OK : ST_NO, h->cap_net_admin ? "yes" : "no",
        h->cap_net_admin ? NULL : "needed for --net (taps, firewall chains)");
    row(t, "CAP_SYS_ADMIN", h->cap_sys_admin ? ST_OK : ST_NO, h->cap_sys_admin ? "yes" : "no",
        h->cap_sys_admin ? NULL : "needed for the VMM's namespaces and mounts");
    row(t, "seccomp", h->seccomp ? ST_OK : ST_MISSING, h->seccomp ? h->seccomp_actions : "unavailable",
        h->seccomp ? NULL : "the kernel lacks CONFIG_SECCOMP_FILTER: VMMs cannot be confined");
    row(t, "user namespaces", h->userns ? ST_OK : ST_NO, h->userns ? "unprivileged allowed" : "not for unprivileged users",
        h->userns ? NULL : "sysctl kernel.unprivileged_userns_clone=1 (only needed without root)");
    row(t, "host kernel", h->kernel_release[0] ? ST_OK : ST_MISSING,
        h->kernel_release[0] ? h->kernel_release : "?", NULL);
}

/* Whether the image's kernel can boot under Firecracker (docs/firecracker.md). */
static void fc_kernel_row(struct table *t, const struct ic_image_paths *p)
{
    struct ic_image_fc_report rep;
    ic_err err = {0};
    if (ic_image_fc_check(p, &rep, &err) < 0) {
        row(t, "firecracker kernel", ST_NO, "-", err.msg);
        return;
    }
    char hint[2100];
    snprintf(hint, sizeof(hint), "%s%s%s", rep.problems, rep.problems[0] && rep.warnings[0] ? "; " : "",
             rep.warnings);
    const char *v = !rep.ok ? "cannot work" : rep.warnings[0] ? "works, with limits" : "works";
    row(t, "firecracker kernel", !rep.ok ? ST_NO : rep.warnings[0] ? ST_WARN : ST_OK, v,
        hint[0] ? hint : NULL);
}

static void image_rows(struct table *t)
{
    char data[IC_PATH_MAX], kernel[IC_PATH_MAX + 32];
    ic_err err = {0};
    if (ic_paths_data_dir(data, sizeof(data), &err) < 0) {
        row(t, "guest kernel", ST_MISSING, "-", err.msg);
        return;
    }
    snprintf(kernel, sizeof(kernel), "%s/kernels/current/vmlinuz", data);
    bool have_kernel = ic_path_exists(kernel);
    row(t, "guest kernel", have_kernel ? ST_OK : ST_MISSING, have_kernel ? kernel : "-",
        have_kernel ? NULL : "run 'sudo make setup' (scripts/setup.sh)");
    struct ic_image_paths p;
    if (ic_image_locate(NULL, &p, &err) == 0) {
        char v[IC_PATH_MAX + 160];
        snprintf(v, sizeof(v), "%s, %s", p.release, p.dir);
        row(t, "guest image", ST_OK, v, NULL);
        fc_kernel_row(t, &p);
    } else {
        row(t, "guest image", ST_MISSING, "-", err.code == ENOENT ? "run 'ironclaw image build'" : err.msg);
        row(t, "firecracker kernel", ST_MISSING, "-", "no image to check");
    }
}

int ic_cmd_doctor(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0},
    };
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'h': usage(stdout); return IC_EXIT_OK;
        default: usage(stderr); return IC_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        ic_cli_error("doctor: unexpected argument '%s'", argv[optind]);
        return IC_EXIT_USAGE;
    }
    ic_err err = {0};
    struct ic_host h;
    if (ic_host_probe(NULL, &h, &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);

    struct table t = {.items = json_array(), .json = json};
    if (!json)
        printf("  %-20s %-8s %-36s %s\n", "ITEM", "STATUS", "VALUE", "HINT");
    cpu_rows(&t, &h);
    program_row(&t, "qemu-system-x86_64", h.qemu, "apt install qemu-system-x86");
    program_row(&t, "firecracker", h.firecracker, "optional; not in Debian: install it yourself for --vmm firecracker");
    program_row(&t, "jailer", h.jailer, "optional; comes with firecracker");
    program_row(&t, "seccompiler-bin", h.seccompiler, "optional; comes with firecracker");
    program_row(&t, "nft", h.nft, "apt install nftables (for --net)");
    program_row(&t, "iptables", h.iptables, "apt install iptables (for --net without nftables)");
    program_row(&t, "iptables-restore", h.iptables_restore, "apt install iptables");
    isolation_rows(&t, &h);
    image_rows(&t);

    const char *driver = NULL;
    bool kvm = false;
    char why[512];
    int r = ic_host_pick_vmm(&h, "auto", &driver, &kvm, why, sizeof(why), &err);
    if (json) {
        json_t *out = json_object();
        json_object_set_new(out, "items", t.items);
        json_object_set_new(out, "host", ic_host_to_json(&h));
        json_object_set_new(out, "auto", r == 0 ? json_pack("{s:b,s:s,s:b,s:s}", "ok", 1, "driver", driver,
                                                            "kvm", kvm, "why", why)
                                               : json_pack("{s:b,s:s}", "ok", 0, "error", err.msg));
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(out);
    } else {
        json_decref(t.items);
        if (r == 0)
            printf("\nauto picks: %s (%s) because %s\n", driver,
                   strcmp(driver, "qemu") == 0 ? (kvm ? "KVM" : "TCG") : "KVM", why);
        else
            printf("\nauto picks: nothing: %s\n", err.msg);
    }
    return r == 0 ? IC_EXIT_OK : IC_EXIT_SETUP;
}
