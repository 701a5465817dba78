/*
 * image.h - the guest image: a kernel plus an initramfs built by ironclaw.
 *
 * An image lives in <data>/images/<name>/ and holds these files:
 *   vmlinuz        the guest kernel (copied from <data>/kernels/current)
 *   vmlinux        the same kernel uncompressed (ELF), for Firecracker;
 *                  absent when it could not be extracted (the manifest
 *                  says why)
 *   config         the kernel's build configuration, when it was next to
 *                  the kernel (ironclaw doctor checks it for Firecracker)
 *   initrd.cpio    an uncompressed newc cpio: /init (ironclaw-guest),
 *                  busybox and its applet links, the kernel modules the
 *                  guest needs and /etc/ironclaw/modules.order
 *   manifest.json  what went in (SHA-256 of every input) and what came out
 * The directory is replaced as a whole (built next to it, then renamed), so
 * a reader sees either the old image or the new one, never a mix.
 *
 * The VM layer only needs ic_image_locate(); the builder and the cpio
 * writer are for `ironclaw image` and the tests.
 */
#ifndef IRONCLAW_IMAGE_H
#define IRONCLAW_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ironclaw/err.h"
#include "ironclaw/paths.h"

#define IC_IMAGE_DEFAULT "default"
#define IC_IMAGE_FORMAT 2          /* manifest.json "format" (2: vmlinux, config) */

struct ic_image_paths {
    char dir[IC_PATH_MAX];         /* <data>/images/<name> */
    char kernel[IC_PATH_MAX];      /* .../vmlinuz */
    char vmlinux[IC_PATH_MAX];     /* .../vmlinux, "" when the image has none */
    char initrd[IC_PATH_MAX];      /* .../initrd.cpio */
    char manifest[IC_PATH_MAX];    /* .../manifest.json */
    char release[128];             /* kernel release, e.g. "6.1.0-56-cloud-amd64" */
};

/* Finds a built image (name NULL means "default"). Returns -ENOENT with
 * "image 'default' is not built; run `ironclaw image build`" when absent. */
int ic_image_locate(const char *name, struct ic_image_paths *out, ic_err *err);

/* ---- building ---------------------------------------------------------- */

/* Progress lines ("resolving modules", ...) go here; may be NULL. */
typedef void (*ic_image_progress_fn)(void *ctx, const char *line);

struct ic_image_build_opts {
    const char *name;              /* NULL: "default" */
    const char *data_dir;          /* NULL: ic_paths_data_dir() */
    const char *kernel;            /* a bzImage or an ELF vmlinux (or the directory holding
                                    * vmlinuz); NULL: <data>/kernels/current/vmlinuz */
    const char *modules_dir;       /* NULL: "modules" next to the kernel, else /lib/modules/<release> */
    const char *release;           /* NULL: "release" file next to the kernel, else the bzImage header */
    const char *guest;             /* NULL: ic_image_find_guest() */
    const char *busybox;           /* NULL: /bin/busybox */
    const char *modules_list;      /* NULL: ic_image_find_modules_list() */
    bool force;                    /* rebuild even if every input hash matches */
    ic_image_progress_fn progress;
    void *progress_ctx;
};

struct ic_image_build_result {
    bool rebuilt;                  /* false: "image up to date" */
    struct ic_image_paths paths;
    char *manifest_json;           /* malloc'd manifest text; caller frees */
};

int ic_image_build(const struct ic_image_build_opts *opts,
                   struct ic_image_build_result *res, ic_err *err);

/* Guest agent binary: explicit path, else $IRONCLAW_GUEST, else
 * <exe dir>/ironclaw-guest, else <exe dir>/../libexec/ironclaw/ironclaw-guest. */
int ic_image_find_guest(const char *explicit_path, char *out, size_t size, ic_err *err);
/* image/modules.list: $IRONCLAW_MODULES_LIST, <exe dir>/../share/ironclaw/modules.list,
 * <exe dir>/../image/modules.list (build tree), or the source tree's copy. */
int ic_image_find_modules_list(char *out, size_t size, ic_err *err);

/* ELF checks on a file: 0 if it is an ELF64 executable without PT_INTERP
 * (statically linked), -ENOEXEC with a sentence naming `what` otherwise. */
int ic_image_check_static(const char *path, const char *what, ic_err *err);

/* ---- module resolution (exposed for tests) ------------------------------ */

struct ic_modlist {
    size_t n;
    char **name;                   /* canonical name ('_' for '-') */
    char **relpath;                /* relative to the modules dir, e.g. kernel/drivers/virtio/virtio.ko */
};

/* Resolves wanted module names (plus their `depends=` closure) under
 * modules_dir into load order, dependencies first. Builtins are skipped;
 * a missing module is an error naming it; compressed modules are refused.
 * With release non-NULL, each module's vermagic must name that release. */
int ic_image_resolve_modules(const char *modules_dir, const char *release,
                             const char *const *wanted, size_t nwanted,
                             struct ic_modlist *out, ic_err *err);
void ic_modlist_free(struct ic_modlist *l);

/* Reads a modules.list file: names separated by blanks or newlines, '#'
 * comments. *names is malloc'd; free with ic_image_free_names. */
int ic_image_read_modules_list(const char *path, char ***names, size_t *n, ic_err *err);
void ic_image_free_names(char **names, size_t n);

/* The value of `key` ("depends", "vermagic", ...) in the .modinfo section
 * of an ELF64 kernel module: malloc'd into *out, or *out = NULL when the
 * key is absent. -ENOEXEC if the file is not a kernel module. */
int ic_image_modinfo(const char *path, const char *key, char **out, ic_err *err);

/* Release string from an x86 bzImage header ("6.1.0-56-cloud-amd64"). */
int ic_image_kernel_release(const char *path, char *out, size_t size, ic_err *err);
/* Release string from an ELF vmlinux's "Linux version ..." banner. */
int ic_image_vmlinux_release(const char *path, char *out, size_t size, ic_err *err);

/* ---- Firecracker's kernel ------------------------------------------------- */

/* 0 if path is an x86-64 ELF executable whose segments lie in the file. */
int ic_image_check_vmlinux(const char *path, ic_err *err);
/* Decompresses the vmlinux inside a bzImage into `out` with the matching
 * Debian tool (gzip, xz, zstd, lz4, bzip2, lzop); how says what was found. */
int ic_image_extract_vmlinux(const char *bzimage, const char *out, char *how, size_t how_size,
                             ic_err *err);

/* Whether an image's kernel can run under Firecracker: problems stop it,
 * warnings limit it. Sentences are "; "-separated. */
struct ic_image_fc_report {
    bool ok;
    char problems[1024];
    char warnings[1024];
    char config[IC_PATH_MAX];      /* the config file read, "" when there was none */
};
int ic_image_fc_check(const struct ic_image_paths *p, struct ic_image_fc_report *rep, ic_err *err);
/* The configuration part on a .config text; modules (may be NULL) are the
 * module names the image carries, for options built as modules. */
void ic_image_fc_check_config(const char *config_text, const char *const *modules,
                              size_t nmodules, struct ic_image_fc_report *rep);

/* ---- inspection ----------------------------------------------------------- */

struct json_t;

/* Everything `ironclaw image show` prints, as a new JSON object: the
 * manifest's fields, "image" (paths and sizes of the three files) and
 * "changed_inputs" (inputs whose recorded file is missing or whose hash
 * differs now; empty when a rebuild would change nothing). data_dir NULL
 * means ic_paths_data_dir(). */
int ic_image_show(const char *data_dir, const char *name, struct json_t **out, ic_err *err);

/* ---- newc cpio writer ---------------------------------------------------- */

typedef struct ic_cpio ic_cpio;

/* Writes to fd (not owned). */
int ic_cpio_open(int fd, ic_cpio **out, ic_err *err);
int ic_cpio_add_dir(ic_cpio *c, const char *path, mode_t perm, ic_err *err);
int ic_cpio_add_file(ic_cpio *c, const char *path, mode_t perm, const void *data, size_t len,
                     ic_err *err);
/* Copies a host file's bytes into the archive under `path`. */
int ic_cpio_add_host_file(ic_cpio *c, const char *path, mode_t perm, const char *host_path,
                          ic_err *err);
int ic_cpio_add_symlink(ic_cpio *c, const char *path, const char *target, ic_err *err);
/* Character device node (no mknod needed: the kernel creates it on unpack). */
int ic_cpio_add_chardev(ic_cpio *c, const char *path, mode_t perm, unsigned major,
                        unsigned minor, ic_err *err);
/* Writes the TRAILER!!! entry and frees c (also on error). Bytes written
 * in total go to *size when not NULL. */
int ic_cpio_finish(ic_cpio *c, uint64_t *size, ic_err *err);
/* Frees without writing a trailer (error paths). */
void ic_cpio_abort(ic_cpio *c);

#endif
