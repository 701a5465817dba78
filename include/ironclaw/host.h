/*
 * host.h - what this host offers for running microVMs, and which VMM
 * driver to use.
 *
 * ic_host_probe() reads /proc, /sys and /dev and searches PATH; it never
 * changes anything. Hardware virtualisation is taken from the CPU flags
 * (vmx/svm), not from /dev/kvm alone: under nested paravirtualised KVM the
 * device exists but a stock guest kernel hangs, so KVM is "usable" only
 * with both. The probe's root prefix and PATH can be replaced, so tests
 * describe a fake host in a temporary directory.
 */
#ifndef IRONCLAW_HOST_H
#define IRONCLAW_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ironclaw/err.h"
#include "ironclaw/paths.h"

struct ic_host_probe_opts {
    const char *root;   /* prefix for /proc, /sys and /dev paths; NULL or "" = the real ones */
    const char *path;   /* PATH to search; NULL = $PATH plus the sbin directories, and then
                         * $IRONCLAW_FIRECRACKER, $IRONCLAW_JAILER, $IRONCLAW_SECCOMPILER
                         * (absolute paths) replace what PATH gave for those three */
};

enum ic_cgroup_mode {
    IC_CGROUP_NONE = 0,
    IC_CGROUP_V1,
    IC_CGROUP_V2,
    IC_CGROUP_HYBRID,   /* v1 controllers plus a v2 tree at /sys/fs/cgroup/unified */
};

struct ic_host {
    /* CPU and KVM */
    bool hw_virt;                    /* vmx or svm in /proc/cpuinfo flags */
    char hw_virt_flag[8];            /* "vmx", "svm" or "" */
    bool hypervisor;                 /* "hypervisor" flag: we are ourselves a guest */
    bool stable_tsc;                 /* constant_tsc and nonstop_tsc */
    bool kvm_present;                /* /dev/kvm exists */
    bool kvm_rw;                     /* ... and opens read/write */
    bool kvm_usable;                 /* hw_virt && kvm_rw */
    bool vhost_vsock_present;        /* /dev/vhost-vsock exists */
    bool vhost_vsock_rw;

    /* Programs found on PATH ("" when missing) */
    char qemu[IC_PATH_MAX];          /* qemu-system-x86_64 */
    char firecracker[IC_PATH_MAX];
    char jailer[IC_PATH_MAX];
    char seccompiler[IC_PATH_MAX];   /* seccompiler-bin */
    char nft[IC_PATH_MAX];
    char iptables[IC_PATH_MAX];
    char iptables_restore[IC_PATH_MAX];

    /* Isolation features */
    enum ic_cgroup_mode cgroup;
    char cgroup_controllers[256];    /* space-separated: v2 root's cgroup.controllers, or v1 hierarchies */
    bool is_root;                    /* effective uid 0 (from /proc/self/status) */
    uint64_t cap_eff;                /* CapEff mask */
    bool cap_net_admin;
    bool cap_sys_admin;
    bool seccomp;                    /* seccomp filters available */
    char seccomp_actions[160];       /* /proc/sys/kernel/seccomp/actions_avail */
    bool userns;                     /* unprivileged user namespaces allowed */
    char kernel_release[128];        /* host kernel, /proc/sys/kernel/osrelease */
};

/* Fills *h. Missing files mean "not available", never an error; only a
 * bad option (a root prefix too long) fails. opts may be NULL. */
int ic_host_probe(const struct ic_host_probe_opts *opts, struct ic_host *h, ic_err *err);

/* Chooses the VMM. requested: "auto" (or NULL), "qemu" or "firecracker".
 * auto = firecracker when it is installed AND the CPU has vmx/svm AND
 * /dev/kvm is read/write; otherwise qemu, with KVM when usable, else TCG.
 * On success *driver is "qemu" or "firecracker" (static strings), *use_kvm
 * is set, and why holds one sentence saying why. A requested driver that
 * is not installed is an error naming what is missing (and the Debian
 * package). An explicit "firecracker" without usable KVM is allowed (why
 * says so): Firecracker's own error then tells the user. */
int ic_host_pick_vmm(const struct ic_host *h, const char *requested, const char **driver,
                     bool *use_kvm, char *why, size_t why_size, ic_err *err);

/* The host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW
 * over a few milliseconds, once per process; 0 when the TSC is not stable
 * or not x86. Under TCG the guest's TSC runs at the host's rate, and a
 * guest kernel that must calibrate it against the emulated PIT fails at
 * random when the host is busy ("could not calculate TSC khz") and then
 * hangs; handing the guest this figure (tsc_early_khz=) skips that
 * calibration. */
uint32_t ic_host_tsc_khz(const struct ic_host *h);

const char *ic_cgroup_mode_name(enum ic_cgroup_mode m);   /* "none", "v1", "v2", "hybrid" */

struct json_t;
/* The probe as a new JSON object (for `ironclaw doctor --json`). */
struct json_t *ic_host_to_json(const struct ic_host *h);

#endif
