/*
 * qemu.c - the QEMU `microvm` driver.
 *
 * QEMU runs the microvm machine with no firmware option ROMs, a serial
 * console written to console.log, and one virtio-serial port named
 * "ironclaw" as the channel. The host end of that port is a Unix socket
 * that ironclaw listens on and QEMU connects to as a client when it starts,
 * so the channel exists before the guest boots; the guest agent's bytes
 * simply wait in the socket until it opens the port. KVM only where the CPU
 * has hardware virtualisation (see host.h), TCG otherwise.
 */
#include "vm/driver.h"
#include "vm/launch.h"
#include "vm/jail.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QEMU_ARGV_MAX 52
#define IC_QEMU_TB_MIB "128"
/* The CPU model under TCG: everything QEMU emulates except ERMS and FSRM.
 * With them the guest kernel copies and clears memory with `rep movsb` and
 * `rep stosb`, which TCG runs a byte at a time; without them it takes its
 * 8-byte loops, and `exec -- cat` streams about 2.5 times as fast (make
 * bench). bench/run.sh boots its baselines with the same model. */
#define IC_QEMU_TCG_CPU "max,-erms,-fsrm"
/* The same for the 8-byte `rep movsq`/`rep stosq` the kernel picks when
 * it believes REP is fast (REP_GOOD, a flag the kernel sets itself, so no
 * CPU model can clear it): TCG runs them an iteration at a time too, and
 * the kernel's unrolled loops copy about 10 % faster (make bench). The
 * kernel marks itself tainted (CPU out of spec) for it; in a guest that
 * exists for one job that is a label, not a risk. */
#define IC_QEMU_TCG_KERNEL_ARGS " clearcpuid=rep_good"

struct qemu {
    uv_pipe_t listener;
    bool listener_init;
    uv_pipe_t *conn;
    uv_timer_t timeout;
    bool timeout_init;
    char sock_path[IC_PATH_MAX];
};

static void fail(ic_vm *vm, int code, const char *msg)
{
    ic_err err = {0};
    ic_err_set(&err, code, "%s", msg);
    ic_vm__fail(vm, &err);
}

static void stop_waiting(ic_vm *vm, struct qemu *q)
{
    if (q->timeout_init)
        uv_timer_stop(&q->timeout);
    if (q->listener_init)
        ic_vm__close(vm, (uv_handle_t *)&q->listener);
    /* The socket file is no longer needed once QEMU is connected. */
    unlink(q->sock_path);
}

static void on_connection(uv_stream_t *server, int status)
{
    ic_vm *vm = server->data;
    struct qemu *q = ic_vm__priv(vm);
    if (status < 0) {
        fail(vm, -status, "accepting QEMU's channel connection failed");
        return;
    }
    uv_pipe_t *conn = malloc(sizeof(*conn));
    if (!conn) {
        fail(vm, ENOMEM, "out of memory");
        return;
    }
    uv_pipe_init(ic_vm__loop(vm), conn, 0);
    conn->data = vm;
    int r = uv_accept(server, (uv_stream_t *)conn);
    if (r < 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        fail(vm, -r, "accepting QEMU's channel connection failed");
        return;
    }
    stop_waiting(vm, q);
    ic_vm__channel_up(vm, (uv_stream_t *)conn);
}

static void on_timeout(uv_timer_t *t)
{
    ic_vm *vm = t->data;
    struct qemu *q = ic_vm__priv(vm);
    stop_waiting(vm, q);
    ic_err err = {0};
    ic_err_set(&err, ETIMEDOUT, "QEMU did not connect to the channel socket within %u ms",
               ic_vm__config(vm)->channel_timeout_ms);
    ic_vm__fail(vm, &err);
}

static int listen_channel(ic_vm *vm, struct qemu *q, ic_err *err)
{
    int r = ic_vm__path(vm, "channel.sock", q->sock_path, err);
    if (r < 0)
        return r;
    /* sun_path holds 107 bytes; the runtime directory must keep it short. */
    if (strlen(q->sock_path) >= 108)
        return ic_err_set(err, ENAMETOOLONG, "socket path %s is too long for a Unix socket "
                          "(set IRONCLAW_RUNTIME_DIR to a shorter directory)", q->sock_path);
    r = ic_state_add(ic_vm__state(vm), IC_RES_SOCKET, "channel", q->sock_path, err);
    if (r < 0)
        return r;
    uv_pipe_init(ic_vm__loop(vm), &q->listener, 0);
    q->listener.data = vm;
    q->listener_init = true;
    r = uv_pipe_bind(&q->listener, q->sock_path);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&q->listener, 1, on_connection);
    if (r < 0)
        return ic_err_set(err, -r, "cannot listen on %s: %s", q->sock_path, uv_strerror(r));
    return 0;
}

/* Argument strings live in `store` so that argv can point into it. */
struct argv_builder {
    char *argv[QEMU_ARGV_MAX];
    size_t n;
    char store[8][IC_PATH_MAX + 128];
    size_t stored;
};

static void arg(struct argv_builder *b, const char *s)
{
    if (b->n < QEMU_ARGV_MAX - 1)
        b->argv[b->n++] = (char *)s;
}

static void argf(struct argv_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void argf(struct argv_builder *b, const char *fmt, ...)
{
    if (b->stored >= sizeof(b->store) / sizeof(b->store[0]))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->store[b->stored], sizeof(b->store[0]), fmt, ap);
    va_end(ap);
    arg(b, b->store[b->stored++]);
}

static int build_argv(ic_vm *vm, const char *qemu_bin, const char *console, struct argv_builder *b,
                      ic_err *err)
{
    const struct ic_vm_config *cfg = ic_vm__config(vm);
    const struct ic_image_paths *img = ic_vm__image(vm);
    bool kvm = ic_vm__use_kvm(vm);
    struct qemu *q = ic_vm__priv(vm);
    char smp[16], mem[16];
    snprintf(smp, sizeof(smp), "%u", cfg->cpus);
    snprintf(mem, sizeof(mem), "%uM", cfg->mem_mib);

    arg(b, qemu_bin);
    arg(b, "-M");
    arg(b, "microvm,x-option-roms=off,isa-serial=on,rtc=off");
    arg(b, "-accel");
    /* A bounded TCG translation buffer (the default reserves 1 GiB) keeps
     * the VMM's memory beyond guest RAM within its cgroup's overhead. */
    arg(b, kvm ? "kvm" : "tcg,tb-size=" IC_QEMU_TB_MIB);
    arg(b, "-cpu");
    arg(b, kvm ? "host" : IC_QEMU_TCG_CPU);
    arg(b, "-smp");
    argf(b, "%s", smp);
    arg(b, "-m");
    argf(b, "%s", mem);
    /* QEMU's own filter on top of ironclaw's, every option denied. */
    arg(b, "-sandbox");
    arg(b, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
    arg(b, "-nodefaults");
    arg(b, "-no-user-config");
    arg(b, "-nographic");
    arg(b, "-no-reboot");
    arg(b, "-serial");
    argf(b, "file:%s", console);
    arg(b, "-kernel");
    arg(b, img->kernel);
    arg(b, "-initrd");
    arg(b, img->initrd);
    char tsc[32] = "";
    uint32_t khz = kvm ? 0 : ic_host_tsc_khz(ic_vm__host(vm));
    if (khz)
        snprintf(tsc, sizeof(tsc), " tsc_early_khz=%u", khz);
    arg(b, "-append");
    argf(b, "console=ttyS0 quiet panic=-1 reboot=t ironclaw.transport=virtio-serial%s%s%s%s%s",
         kvm ? "" : IC_QEMU_TCG_KERNEL_ARGS, tsc, cfg->debug_guest ? " ironclaw.debug=1" : "",
         cfg->net_cmdline ? " " : "", cfg->net_cmdline ? cfg->net_cmdline : "");
    /* The network, when the VM has one: the tap vm.c made in the VM's
     * namespace (QEMU runs inside it). Without one, no NIC at all. */
    if (cfg->tap_name) {
        arg(b, "-netdev");
        /* Opened by the trampoline: a jailed QEMU is unprivileged. */
        argf(b, "tap,id=n0,fd=%d", IC_LAUNCH_TAP_FD);
        arg(b, "-device");
        argf(b, "virtio-net-device,netdev=n0,mac=%s", cfg->mac);
    }
    arg(b, "-device");
    arg(b, "virtio-serial-device");
    arg(b, "-chardev");
    argf(b, "socket,id=ironclaw,path=%s", q->sock_path);
    arg(b, "-device");
    arg(b, "virtserialport,chardev=ironclaw,name=ironclaw");
    b->argv[b->n] = NULL;
    if (b->stored > sizeof(b->store) / sizeof(b->store[0]) || b->n >= QEMU_ARGV_MAX - 1)
        return ic_err_set(err, E2BIG, "internal error: QEMU command line too long");
    return 0;
}

/* What QEMU opens besides its binary, kernel and initrd, for its jail:
 * firmware and the TCG accelerator module (both found relative to the
 * binary), the console file, the channel socket, /dev/kvm. */
static int jail_paths(ic_vm *vm, const char *qemu_bin, const char *console, ic_err *err)
{
    char path[IC_PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(qemu_bin, '/');
    int len = slash ? (int)(slash - qemu_bin) : 0;
    struct qemu *q = ic_vm__priv(vm);
    int r = 0;
    snprintf(path, sizeof(path), "%.*s/../share/qemu", len, qemu_bin);
    if (realpath(path, real))
        r = ic_vm__jail_path(vm, IC_JAIL_RO, real, err);
    snprintf(path, sizeof(path), "%.*s/../lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so", len, qemu_bin);
    if (r == 0 && !ic_vm__use_kvm(vm) && realpath(path, real))
        r = ic_vm__jail_path(vm, IC_JAIL_EXE, real, err);
    if (r == 0 && ic_vm__use_kvm(vm))
        r = ic_vm__jail_path(vm, IC_JAIL_DEV, "/dev/kvm", err);
    if (r == 0)
        r = ic_vm__jail_path(vm, IC_JAIL_RW, console, err);
    if (r == 0)
        r = ic_vm__jail_path(vm, IC_JAIL_RW, q->sock_path, err);
    return r;
}

static int qemu_start(ic_vm *vm, ic_err *err)
{
    const struct ic_host *host = ic_vm__host(vm);
    int r;
    if (!host->qemu[0])
        return ic_err_set(err, ENOENT, "qemu-system-x86_64 is not installed "
                          "(Debian package qemu-system-x86)");
    if (ic_vm__config(vm)->drive)
        return ic_err_set(err, ENOTSUP, "--drive is only supported with --vmm firecracker so far");
    struct qemu *q = calloc(1, sizeof(*q));
    if (!q)
        return ic_err_set(err, ENOMEM, "out of memory");
    ic_vm__set_priv(vm, q);

    char console[IC_PATH_MAX], log[IC_PATH_MAX];
    if ((r = ic_vm__path(vm, "console.log", console, err)) < 0 ||
        (r = ic_vm__path(vm, "vmm.log", log, err)) < 0)
        return r;
    r = listen_channel(vm, q, err);
    if (r < 0)
        return r;
    r = jail_paths(vm, host->qemu, console, err);
    if (r < 0)
        return r;

    _cleanup_free_ struct argv_builder *b = calloc(1, sizeof(*b));
    if (!b)
        return ic_err_set(err, ENOMEM, "out of memory");
    r = build_argv(vm, host->qemu, console, b, err);
    if (r < 0)
        return r;
    if (ic_log_get_level() >= IC_LOG_DEBUG)
        for (size_t i = 0; i < b->n; i++)
            ic_log_debug("qemu argv[%zu] = %s", i, b->argv[i]);
    r = ic_vm__spawn_vmm_flags(vm, b->argv, log,
                               ic_vm__config(vm)->tap_name ? IC_VM_SPAWN_TAP_FD : 0, err);
    if (r < 0)
        return r;

    uv_timer_init(ic_vm__loop(vm), &q->timeout);
    q->timeout.data = vm;
    q->timeout_init = true;
    uv_timer_start(&q->timeout, on_timeout, ic_vm__config(vm)->channel_timeout_ms, 0);
    return 0;
}

static void qemu_release(ic_vm *vm)
{
    struct qemu *q = ic_vm__priv(vm);
    if (!q)
        return;
    if (q->timeout_init)
        ic_vm__close(vm, (uv_handle_t *)&q->timeout);
    if (q->listener_init)
        ic_vm__close(vm, (uv_handle_t *)&q->listener);
    /* q itself is freed by vm.c with the VM, after the close callbacks. */
}

const struct ic_vm_driver ic_vm_driver_qemu = {
    .name = "qemu",
    .start = qemu_start,
    .stop = NULL, /* the guest powers itself off; vm.c kills after the grace */
    .release = qemu_release,
    .jail = true,
    .seccomp_level = "default",
};
