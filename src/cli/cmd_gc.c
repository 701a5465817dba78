/*
 * cmd_gc.c - `ironclaw gc`: remove everything left by VMs whose owner is
 * gone (crash, kill -9): their VMM processes, sockets, files and runtime
 * directories, as listed in their state records. A VM whose owner still
 * holds its lock is never touched.
 */
#include "cli/cli.h"

#include "ironclaw/fsutil.h"
#include "ironclaw/paths.h"
#include "ironclaw/state.h"
#include "ironclaw/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct gc {
    bool json;
    bool dry_run;
    json_t *removed;
    int count;
    int failures;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw gc [--dry-run] [--json]\n"
            "\n"
            "Finds VMs whose owning ironclaw process has died (kill -9 included) and\n"
            "removes everything they left: VMM processes, sockets, files, directories.\n"
            "VMs whose owner is alive are left alone.\n"
            "\n"
            "Options:\n"
            "  -n, --dry-run  only say what would be removed\n"
            "      --json     print what was removed as JSON\n"
            "  -h, --help     this help\n");
}

/* A directory without a readable record: remove it only if nobody holds
 * its lock (an owner may be writing its very first record). */
static int reap_unreadable(struct gc *gc, const char *dir, ic_err *err)
{
    char lock[IC_PATH_MAX];
    int r = ic_path_join(lock, sizeof(lock), err, "%s/lock", dir);
    if (r < 0)
        return r;
    int fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        bool held = flock(fd, LOCK_EX | LOCK_NB) < 0;
        close(fd);
        if (held)
            return 1;
    }
    return gc->dry_run ? 0 : ic_rm_rf(dir, err);
}

static void report(struct gc *gc, const char *id, const char *name, const char *dir,
                   const ic_err *err)
{
    if (gc->json) {
        json_array_append_new(gc->removed, json_pack("{s:s, s:s, s:s, s:b, s:s?}", "id", id,
                                                     "name", name, "dir", dir, "removed",
                                                     !err && !gc->dry_run, "error",
                                                     err ? err->msg : NULL));
    } else if (err) {
        fprintf(stderr, "ironclaw: gc: %s: %s\n", id, err->msg);
    } else {
        printf("%s %s%s%s%s\n", gc->dry_run ? "would remove" : "removed", id,
               name[0] ? " (" : "", name, name[0] ? ")" : "");
    }
}

static int visit(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    struct gc *gc = ud;
    ic_err err = {0};
    const char *id = strrchr(dir, '/') + 1;
    if (!st) {
        int r = reap_unreadable(gc, dir, &err);
        if (r == 1)
            return 0;
        gc->count++;
        if (r < 0)
            gc->failures++;
        report(gc, id, "", dir, r < 0 ? &err : NULL);
        return 0;
    }
    if (ic_state_owner_alive(st))
        return 0;
    gc->count++;
    int r = gc->dry_run ? 0 : ic_vm_reap_record(st, &err);
    if (r < 0)
        gc->failures++;
    report(gc, id, ic_state_name(st), dir, r < 0 ? &err : NULL);
    return 0;
}

int ic_cmd_gc(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct gc gc = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "nh", opts, NULL)) != -1) {
        if (c == 'j')
            gc.json = true;
        else if (c == 'n')
            gc.dry_run = true;
        else if (c == 'h')
            return usage(stdout), 0;
        else
            return ic_cli_error("see 'ironclaw gc --help'"), IC_EXIT_USAGE;
    }
    if (optind < argc)
        return ic_cli_error("gc takes no arguments"), IC_EXIT_USAGE;
    ic_err err = {0};
    char runtime[IC_PATH_MAX];
    if (ic_paths_runtime_dir(runtime, sizeof(runtime), &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    if (gc.json)
        gc.removed = json_array();
    if (ic_state_each(runtime, visit, &gc, &err) < 0) {
        json_decref(gc.removed);
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);
    }
    if (gc.json) {
        json_dumpf(gc.removed, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(gc.removed);
    } else if (gc.count == 0) {
        printf("nothing to remove\n");
    }
    return gc.failures ? IC_EXIT_INTERNAL : 0;
}
