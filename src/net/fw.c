/*
 * fw.c - the two firewall backends behind one interface (net.h):
 * nftables through libnftables and iptables through iptables-restore and
 * iptables-save (posix_spawn), both in the thread pool when called from the
 * loop, directly in the reaper and the CLI. Adding a VM applies its rules in one transaction
 * and reads them back; any failure removes what was applied before the
 * caller hears of it. Also: which backend `auto` means, listing every
 * IRONCLAW_ chain, and the test-only fault injection.
 */
#include "net/net_int.h"

#include "ironclaw/buf.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/log.h"
#include "ironclaw/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <jansson.h>
/* libnftables.h defines _GNU_SOURCE itself; the build already does. */
#undef _GNU_SOURCE
#include <nftables/libnftables.h>

#define TOOL_TIMEOUT_MS 30000

/* ---- test-only fault injection ----------------------------------------------- */

const char *ic_net__fault_step(void)
{
    const char *v = getenv(IC_NET_FAULT_ENV);
    return v && *v ? v : NULL;
}

bool ic_net__fault(const char *fault, const char *step)
{
    return fault && strcmp(fault, step) == 0;
}

int ic_net__fault_err(const char *step, ic_err *err)
{
    return ic_err_set(err, EIO, "%s: failure injected for the test (%s=%s)", step,
                      IC_NET_FAULT_ENV, step);
}

/* ---- libnftables --------------------------------------------------------------- */

/* libnftables keeps process-wide state that is not thread-safe (its
 * interface cache, xtables and GMP set-up), and the kernel serialises
 * nf_tables transactions anyway: this lock is the one piece of global
 * state in the network layer, and it guards a library, not ironclaw data. */
static pthread_mutex_t nft_mutex = PTHREAD_MUTEX_INITIALIZER;

static int nft_errno(const char *msg)
{
    if (strstr(msg, "Operation not permitted"))
        return EPERM;
    if (strstr(msg, "No such file or directory"))
        return ENOENT;
    if (strstr(msg, "File exists"))
        return EEXIST;
    return EIO;
}

/* The first "Error: ..." line of nft's diagnostics. */
static void nft_error_line(const char *text, char *out, size_t size)
{
    const char *e = text ? strstr(text, "Error: ") : NULL;
    ic_net__first_line(e ? e : text, out, size);
    if (!out[0])
        snprintf(out, size, "nft failed without saying why");
}

int ic_net__nft_run(const char *script, bool json, char **out, ic_err *err)
{
    pthread_mutex_lock(&nft_mutex);
    int r = 0;
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!ctx) {
        pthread_mutex_unlock(&nft_mutex);
        return ic_err_set(err, ENOMEM, "cannot create a libnftables context");
    }
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    if (json)
        nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON);
    if (nft_run_cmd_from_buffer(ctx, script) != 0) {
        char line[320];
        const char *etext = nft_ctx_get_error_buffer(ctx);
        nft_error_line(etext, line, sizeof(line));
        r = ic_err_set(err, nft_errno(etext ? etext : ""), "nft: %s", line);
    } else if (out) {
        const char *o = nft_ctx_get_output_buffer(ctx);
        *out = strdup(o ? o : "");
        if (!*out)
            r = ic_err_set(err, ENOMEM, "out of memory");
    }
    nft_ctx_free(ctx);
    pthread_mutex_unlock(&nft_mutex);
    return r;
}

/* ---- the shared table ------------------------------------------------------ */

/* flock on IC_FW_NFT_LOCK: shared while adding a VM, exclusive (and not
 * waiting) to remove the table, so the table never goes while a VM is
 * being added to it. Returns the descriptor, or -1 (then nothing is
 * serialised: the table is simply not removed). */
static int nft_lock(int how)
{
    const char *path = IC_FW_NFT_LOCK;
    if (access("/run/lock", W_OK) != 0)
        path = "/run/ironclaw-nftables.lock";
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    while (flock(fd, how) < 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static int nft_add(const struct ic_fw_rules *r, bool fault, ic_err *err)
{
    _cleanup_free_ char *text = ic_fw_nft_add_text(r, fault);
    if (!text)
        return ic_err_set(err, ENOMEM, "out of memory");
    _cleanup_close_ int lock = nft_lock(LOCK_SH);
    if (lock < 0)
        return ic_err_sys(err, errno ? errno : EIO, "cannot take %s", IC_FW_NFT_LOCK);
    int rc = ic_net__nft_run(text, false, NULL, err);
    if (rc != -ENOENT)
        return rc;
    /* No table yet (or a missing object): create the skeleton, once on
     * the host ("create" fails if another ironclaw was first), and retry. */
    _cleanup_free_ char *skel = ic_fw_nft_skeleton_text();
    ic_err serr = {0};
    if (!skel)
        return ic_err_set(err, ENOMEM, "out of memory");
    int sr = ic_net__nft_run(skel, false, NULL, &serr);
    if (sr < 0 && sr != -EEXIST) {
        *err = serr;
        return ic_err_wrap(err, "creating table inet %s", IC_FW_NFT_TABLE);
    }
    return ic_net__nft_run(text, false, NULL, err);
}

/* Chains of the shared table whose names ironclaw makes, counted. */
struct chain_count {
    int n;
};

static int count_vm_chain(enum ic_fw_backend b, const char *chain, void *ud)
{
    ((struct chain_count *)ud)->n++;
    return 0;
}

static int list_nft(ic_fw_chain_fn fn, void *ud, ic_err *err);

/* After the last VM: the table goes, unless a VM is being added. */
static void nft_drop_table_if_unused(void)
{
    struct chain_count c = {0};
    if (list_nft(count_vm_chain, &c, NULL) < 0 || c.n > 0)
        return;
    _cleanup_close_ int lock = nft_lock(LOCK_EX | LOCK_NB);
    if (lock < 0)
        return; /* someone is adding a VM: the table stays for it */
    c.n = 0;
    if (list_nft(count_vm_chain, &c, NULL) < 0 || c.n > 0)
        return;
    ic_net__nft_run("delete table inet " IC_FW_NFT_TABLE, false, NULL, NULL);
}

static bool nft_chain_exists(const char *chain, char **json, ic_err *err)
{
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "list chain inet " IC_FW_NFT_TABLE " %s", chain);
    return ic_net__nft_run(cmd, true, json, err) == 0;
}

/* Idempotent: what the VM's chain says (its veth, its guest) is what goes. */
static int nft_remove(const char *chain, ic_err *err)
{
    _cleanup_free_ char *json = NULL;
    ic_err lerr = {0};
    if (!nft_chain_exists(chain, &json, &lerr)) {
        if (lerr.code != ENOENT)
            return *err = lerr, -lerr.code;
        return 0; /* nothing of it (one transaction added it all) */
    }
    struct ic_fw_rules r;
    memset(&r, 0, sizeof(r));
    snprintf(r.chain, sizeof(r.chain), "%s", chain);
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): json is freed by _cleanup_free_ */
    int rc = ic_fw_nft_parse_chain(json, &r, err);
    if (rc < 0)
        return rc;
    char guard[IC_NET_CHAIN_SIZE + 8];
    snprintf(guard, sizeof(guard), "%s_guard", chain);
    bool has_guard = nft_chain_exists(guard, NULL, NULL);
    _cleanup_free_ char *text = ic_fw_nft_del_text(&r, has_guard);
    if (!text)
        return ic_err_set(err, ENOMEM, "out of memory");
    rc = ic_net__nft_run(text, false, NULL, err);
    if (rc == 0)
        nft_drop_table_if_unused();
    return rc;
}

/* One listing per object: nft 1.0's cache filter keeps only one chain and
 * one map per run, so the commands run one by one and their JSON
 * documents are checked together. */
static int nft_verify(const struct ic_fw_rules *r, ic_err *err)
{
    _cleanup_free_ char *cmds = ic_fw_nft_check_cmds(r->chain);
    if (!cmds)
        return ic_err_set(err, ENOMEM, "out of memory");
    ic_buf all = IC_BUF_INIT;
    int rc = 0;
    for (char *save = NULL, *cmd = strtok_r(cmds, "\n", &save); cmd && rc == 0;
         cmd = strtok_r(NULL, "\n", &save)) {
        _cleanup_free_ char *json = NULL;
        rc = ic_net__nft_run(cmd, true, &json, err);
        /* json is freed by _cleanup_free_ each round; clang 14 does not see it. */
        if (rc == 0 && (!json || ic_buf_append(&all, json, strlen(json)) < 0 ||
                        ic_buf_append_u8(&all, '\n') < 0)) // NOLINT(clang-analyzer-unix.Malloc)
            rc = ic_err_set(err, ENOMEM, "out of memory");
    }
    if (rc == 0 && ic_buf_append_u8(&all, 0) < 0)
        rc = ic_err_set(err, ENOMEM, "out of memory");
    if (rc == 0)
        rc = ic_fw_nft_check((const char *)ic_buf_head(&all), r, err);
    ic_buf_free(&all);
    return rc;
}

/* ---- iptables tools -------------------------------------------------------------- */

struct ipt_tools {
    char restore[IC_PATH_MAX];
    char save[IC_PATH_MAX];
};

static int ipt_find(struct ipt_tools *t, ic_err *err)
{
    if (ic_net__find_program("iptables-restore", t->restore, sizeof(t->restore)) < 0)
        return ic_err_set(err, ENOENT, "iptables-restore is not installed (Debian package iptables)");
    const char *dash = strrchr(t->restore, '-');
    if (!dash || strcmp(dash, "-restore") != 0 ||
        snprintf(t->save, sizeof(t->save), "%.*s-save", (int)(dash - t->restore), t->restore) >=
            (int)sizeof(t->save))
        return ic_err_set(err, ENOENT, "cannot find iptables-save beside %s", t->restore);
    return 0;
}

/* `iptables-restore -w 10 --noflush`: waits for the xtables lock (legacy)
 * instead of failing, and adds to the tables instead of replacing them. */
#define IPT_RESTORE_ARGV(t) {(t)->restore, (char *)"-w", (char *)"10", (char *)"--noflush", NULL}

static int ipt_tool_error(const char *what, int status, const char *errout, ic_err *err)
{
    char line[320];
    ic_net__first_line(errout, line, sizeof(line));
    int code = strstr(errout ? errout : "", "ermission denied") ||
               strstr(errout ? errout : "", "not permitted") ? EPERM : EIO;
    return ic_err_set(err, code, "%s failed (status %d): %s", what, status,
                      line[0] ? line : "no message");
}

static int ipt_run(char *const argv[], const char *input, char **out, ic_err *err)
{
    _cleanup_free_ char *errout = NULL;
    int status = 0;
    int r = ic_net__run_blocking(argv, input, TOOL_TIMEOUT_MS, out, &errout, &status, err);
    if (r == 0 && status != 0) {
        if (out) {
            free(*out);
            *out = NULL;
        }
        r = ipt_tool_error(strrchr(argv[0], '/') + 1, status, errout, err);
    }
    return r;
}

static int ipt_remove(const char *chain, ic_err *err)
{
    struct ipt_tools t;
    int r = ipt_find(&t, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *save = NULL;
    char *save_argv[] = {t.save, NULL};
    r = ipt_run(save_argv, NULL, &save, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *del = ic_fw_ipt_del_text(save, chain);
    if (!del)
        return ic_err_set(err, ENOMEM, "out of memory");
    if (!del[0])
        return 0;
    char *argv[] = IPT_RESTORE_ARGV(&t);
    return ipt_run(argv, del, NULL, err);
}

static int ipt_verify(const struct ic_fw_rules *rules, ic_err *err)
{
    struct ipt_tools t;
    int r = ipt_find(&t, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *save = NULL;
    char *argv[] = {t.save, (char *)"-t", (char *)"filter", NULL};
    r = ipt_run(argv, NULL, &save, err);
    return r < 0 ? r : ic_fw_ipt_check(save, rules, err);
}

/* ---- blocking entry points ---------------------------------------------------------- */

/* True when iptables' FORWARD policy is DROP (docker hosts, hardened
 * hosts). An nftables accept cannot override a drop in another table, but
 * iptables' own jumps at the top of FORWARD can. */
static bool ipt_forward_drops(void)
{
    struct ipt_tools t;
    if (ipt_find(&t, NULL) < 0)
        return false;
    _cleanup_free_ char *save = NULL;
    char *argv[] = {t.save, (char *)"-t", (char *)"filter", NULL};
    return ipt_run(argv, NULL, &save, NULL) == 0 && save && strstr(save, "\n:FORWARD DROP ");
}

int ic_fw_resolve(enum ic_fw_backend requested, enum ic_fw_backend *out, ic_err *err)
{
    bool drops = requested != IC_FW_IPTABLES && ipt_forward_drops();
    if (requested == IC_FW_NFT && drops)
        ic_log_warn("firewall: iptables' FORWARD policy is DROP on this host: an nftables accept "
                    "cannot override it, so the VM's allowed traffic will be dropped too; use "
                    "--firewall iptables (or auto)");
    if (requested != IC_FW_AUTO) {
        *out = requested;
        return 0;
    }
    if (drops) {
        ic_log_info("firewall: iptables' FORWARD policy is DROP; using iptables, whose jumps "
                    "come first in FORWARD");
        *out = IC_FW_IPTABLES;
        return 0;
    }
    /* A cheap question nf_tables answers: the table, or "no such table". */
    ic_err nerr = {0};
    int pr = ic_net__nft_run("list table inet " IC_FW_NFT_TABLE, false, NULL, &nerr);
    if (pr == 0 || pr == -ENOENT) {
        *out = IC_FW_NFT;
        return 0;
    }
    char path[IC_PATH_MAX];
    if (ic_net__find_program("iptables-restore", path, sizeof(path)) == 0) {
        ic_log_info("firewall: nf_tables does not answer (%s); using iptables", nerr.msg);
        *out = IC_FW_IPTABLES;
        return 0;
    }
    return ic_err_set(err, nerr.code ? nerr.code : ENOENT, "no firewall backend: nf_tables "
                      "does not answer (%s) and iptables-restore is not installed", nerr.msg);
}

int ic_fw_remove_blocking(enum ic_fw_backend b, const char *chain, ic_err *err)
{
    if (!ic_net_chain_valid(chain))
        return ic_err_set(err, EINVAL, "'%s' is not an ironclaw chain name", chain);
    int r = b == IC_FW_IPTABLES ? ipt_remove(chain, err) : nft_remove(chain, err);
    return r < 0 ? ic_err_wrap(err, "removing %s (%s)", chain, ic_fw_backend_name(b)) : 0;
}

int ic_fw_verify_blocking(enum ic_fw_backend b, const struct ic_fw_rules *r, ic_err *err)
{
    return b == IC_FW_IPTABLES ? ipt_verify(r, err) : nft_verify(r, err);
}

static int list_nft(ic_fw_chain_fn fn, void *ud, ic_err *err)
{
    _cleanup_free_ char *json = NULL;
    ic_err lerr = {0};
    int r = ic_net__nft_run("list chains inet", true, &json, &lerr);
    if (r < 0) {
        if (err)
            *err = lerr;
        return r;
    }
    json_t *root = json_loads(json, JSON_DISABLE_EOF_CHECK, NULL);
    json_t *list = json_object_get(root, "nftables");
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
        json_t *c = json_object_get(item, "chain");
        const char *table = json_string_value(json_object_get(c, "table"));
        const char *name = json_string_value(json_object_get(c, "name"));
        if (table && name && strcmp(table, IC_FW_NFT_TABLE) == 0 && ic_net_chain_valid(name) &&
            (r = fn(IC_FW_NFT, name, ud)) < 0)
            break;
    }
    json_decref(root);
    return r < 0 ? r : 0;
}

static int list_ipt(ic_fw_chain_fn fn, void *ud, ic_err *err)
{
    struct ipt_tools t;
    if (ipt_find(&t, NULL) < 0)
        return 0; /* no iptables: no iptables chains */
    _cleanup_free_ char *save = NULL;
    char *argv[] = {t.save, NULL};
    int r = ipt_run(argv, NULL, &save, err);
    if (r < 0)
        return r;
    /* Chains appear once per table (filter, nat): report each name once. */
    char seen[4096] = "";
    size_t used = 0;
    for (char *save_p = NULL, *line = strtok_r(save, "\n", &save_p); line;
         line = strtok_r(NULL, "\n", &save_p)) {
        char name[IC_NET_CHAIN_SIZE];
        if (line[0] != ':' || sscanf(line + 1, "%25s", name) != 1 || !ic_net_chain_valid(name))
            continue;
        if (strstr(seen, name))
            continue;
        if (used + IC_NET_CHAIN_SIZE < sizeof(seen)) {
            memcpy(seen + used, name, IC_NET_CHAIN_LEN);
            used += IC_NET_CHAIN_LEN;
            seen[used++] = ' ';
            seen[used] = '\0';
        }
        if ((r = fn(IC_FW_IPTABLES, name, ud)) < 0)
            return r;
    }
    return 0;
}

int ic_fw_list(enum ic_fw_backend b, ic_fw_chain_fn fn, void *ud, ic_err *err)
{
    return b == IC_FW_IPTABLES ? list_ipt(fn, ud, err) : list_nft(fn, ud, err);
}

/* ---- asynchronous add and remove ------------------------------------------------------ */

/* Both backends run in the thread pool: libnftables calls block, and so
 * does starting a program (fork and the wait for its exec: ~5 ms per
 * uv_spawn on this kind of host, so 100 VMs' iptables runs stalled the
 * loop for seconds). posix_spawn from a pool thread blocks only that
 * thread. */

enum fw_kind { OP_ADD, OP_REMOVE };

struct fw_op {
    enum fw_kind kind;
    enum ic_fw_backend backend;
    struct ic_fw_rules rules;
    bool fault_firewall, fault_verify;
    uv_work_t work;
    ic_err err;            /* the failure reported to done */
    bool failed;
    ic_fw_done_fn done;
    void *ud;
};

static void op_fail(struct fw_op *op, const char *step, const ic_err *cause)
{
    if (op->failed)
        return;
    op->failed = true;
    op->err = *cause;
    if (step)
        ic_err_wrap(&op->err, "%s", step);
}

static int ipt_add(const struct ic_fw_rules *r, bool fault, ic_err *err)
{
    struct ipt_tools t;
    int rc = ipt_find(&t, err);
    if (rc < 0)
        return rc;
    _cleanup_free_ char *text = ic_fw_ipt_add_text(r, fault);
    if (!text)
        return ic_err_set(err, ENOMEM, "out of memory");
    char *argv[] = IPT_RESTORE_ARGV(&t);
    return ipt_run(argv, text, NULL, err);
}

/* Apply, read back, and on any failure remove what may have been applied
 * (iptables-restore commits table by table). */
static void add_work(struct fw_op *op)
{
    ic_err e = {0};
    const struct ic_fw_rules *r = &op->rules;
    bool nft = op->backend == IC_FW_NFT;
    if ((nft ? nft_add(r, op->fault_firewall, &e) : ipt_add(r, op->fault_firewall, &e)) < 0)
        op_fail(op, "firewall", &e);
    else if (op->fault_verify)
        op_fail(op, NULL, (ic_net__fault_err("verify", &e), &e));
    else if ((nft ? nft_verify(r, &e) : ipt_verify(r, &e)) < 0)
        op_fail(op, "verify", &e);
    if (!op->failed)
        return;
    ic_err re = {0};
    if ((nft ? nft_remove(r->chain, &re) : ipt_remove(r->chain, &re)) < 0)
        ic_log_error("firewall: rolling back %s: %s", r->chain, re.msg);
}

static void fw_work(uv_work_t *w)
{
    struct fw_op *op = w->data;
    ic_err e = {0};
    if (op->kind == OP_ADD)
        add_work(op);
    else if (ic_fw_remove_blocking(op->backend, op->rules.chain, &e) < 0)
        op_fail(op, NULL, &e);
}

static void fw_after(uv_work_t *w, int status)
{
    struct fw_op *op = w->data;
    ic_fw_done_fn done = op->done;
    void *ud = op->ud;
    ic_err err = op->err;
    bool failed = op->failed;
    free(op);
    done(failed ? &err : NULL, ud);
}

static int op_queue(uv_loop_t *loop, struct fw_op *op, ic_err *err)
{
    op->work.data = op;
    int r = uv_queue_work(loop, &op->work, fw_work, fw_after);
    if (r < 0) {
        free(op);
        return ic_err_set(err, -r, "firewall: cannot queue work: %s", uv_strerror(r));
    }
    return 0;
}

static struct fw_op *op_new(enum fw_kind kind, enum ic_fw_backend b, ic_fw_done_fn done, void *ud,
                            ic_err *err)
{
    if (b != IC_FW_NFT && b != IC_FW_IPTABLES) {
        ic_err_set(err, EINVAL, "firewall: no backend chosen");
        return NULL;
    }
    struct fw_op *op = calloc(1, sizeof(*op));
    if (!op) {
        ic_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    op->kind = kind;
    op->backend = b;
    op->done = done;
    op->ud = ud;
    return op;
}

int ic_fw_add(uv_loop_t *loop, enum ic_fw_backend b, const struct ic_fw_rules *r,
              const char *fault_step, ic_fw_done_fn done, void *ud, ic_err *err)
{
    struct fw_op *op = op_new(OP_ADD, b, done, ud, err);
    if (!op)
        return -EINVAL;
    op->rules = *r;
    op->fault_firewall = fault_step && strcmp(fault_step, "firewall") == 0;
    op->fault_verify = fault_step && strcmp(fault_step, "verify") == 0;
    return op_queue(loop, op, err);
}

int ic_fw_remove(uv_loop_t *loop, enum ic_fw_backend b, const char *chain, ic_fw_done_fn done,
                 void *ud, ic_err *err)
{
    if (!ic_net_chain_valid(chain))
        return ic_err_set(err, EINVAL, "'%s' is not an ironclaw chain name", chain);
    struct fw_op *op = op_new(OP_REMOVE, b, done, ud, err);
    if (!op)
        return -EINVAL;
    snprintf(op->rules.chain, sizeof(op->rules.chain), "%s", chain);
    return op_queue(loop, op, err);
}
