/*
 * cmd_image.c - `ironclaw image build|show`: make the guest image from the
 * extracted kernel, the guest agent and busybox, or describe the built one.
 */
#include "cli/cli.h"
#include "ironclaw/image.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw image build [--force] [--kernel PATH] [--guest PATH]\n"
            "                            [--busybox PATH] [--modules-list PATH] [--json]\n"
            "       ironclaw image show [--json]\n"
            "\n"
            "build  assembles <data>/images/default: the guest kernel, and an initramfs\n"
            "       holding the guest agent as /init, busybox and the kernel modules of\n"
            "       image/modules.list with their dependencies. Nothing is rebuilt when\n"
            "       every input has the hash recorded in the manifest. The image also\n"
            "       gets the kernel uncompressed (vmlinux, extracted from the bzImage)\n"
            "       for --vmm firecracker, and the kernel's config when it is next to it.\n"
            "show   describes the built image and says whether its inputs changed.\n"
            "\n"
            "Options:\n"
            "  -f, --force              rebuild even if nothing changed\n"
            "      --kernel PATH        a bzImage or an ELF vmlinux (or the directory holding\n"
            "                           vmlinuz, release, config and modules/); default\n"
            "                           <data>/kernels/current\n"
            "      --guest PATH         the static ironclaw-guest binary; default $IRONCLAW_GUEST,\n"
            "                           then next to ironclaw, then ../libexec/ironclaw/\n"
            "      --busybox PATH       a static busybox; default /bin/busybox (busybox-static)\n"
            "      --modules-list PATH  wanted modules; default $IRONCLAW_MODULES_LIST, else\n"
            "                           modules.list from share/ironclaw or image/\n"
            "      --json               machine-readable output on stdout\n"
            "  -h, --help               this help\n");
}

static void print_progress(void *ctx, const char *line)
{
    (void)ctx;
    if (ic_log_get_level() > IC_LOG_ERROR)
        fprintf(stderr, "image: %s\n", line);
}

static int exit_for(int r)
{
    return r == -ENOENT || r == -ENOEXEC || r == -ENOTSUP || r == -EINVAL ? IC_EXIT_SETUP
                                                                        : IC_EXIT_INTERNAL;
}

static const char *human_size(json_int_t n, char *buf, size_t size)
{
    if (n >= 1 << 20)
        snprintf(buf, size, "%.1f MiB", (double)n / (1 << 20));
    else if (n >= 1 << 10)
        snprintf(buf, size, "%.1f KiB", (double)n / (1 << 10));
    else
        snprintf(buf, size, "%lld B", (long long)n);
    return buf;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "?";
}

static int cmd_build(int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},          {"kernel", required_argument, NULL, 'k'},
        {"guest", required_argument, NULL, 'g'},    {"busybox", required_argument, NULL, 'b'},
        {"modules-list", required_argument, NULL, 'm'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},           {0, 0, 0, 0},
    };
    struct ic_image_build_opts o = {.progress = print_progress};
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+fh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': o.force = true; break;
        case 'k': o.kernel = optarg; break;
        case 'g': o.guest = optarg; break;
        case 'b': o.busybox = optarg; break;
        case 'm': o.modules_list = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return IC_EXIT_OK;
        default: usage(stderr); return IC_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        ic_cli_error("image build: unexpected argument '%s'", argv[optind]);
        return IC_EXIT_USAGE;
    }
    ic_err err = {0};
    struct ic_image_build_result res;
    int r = ic_image_build(&o, &res, &err);
    if (r < 0)
        return ic_cli_fail(&err, exit_for(r));
    if (json) {
        json_t *m = json_loads(res.manifest_json, 0, NULL);
        json_t *out = json_object();
        json_object_set_new(out, "rebuilt", json_boolean(res.rebuilt));
        json_object_set_new(out, "dir", json_string(res.paths.dir));
        json_object_set_new(out, "kernel", json_string(res.paths.kernel));
        json_object_set_new(out, "initrd", json_string(res.paths.initrd));
        json_object_set_new(out, "manifest", m ? m : json_null());
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(out);
    } else if (res.rebuilt) {
        json_t *m = json_loads(res.manifest_json, 0, NULL);
        json_t *outs = json_object_get(m, "outputs");
        char a[32], b[32];
        printf("built image 'default' in %s: kernel %s (%s), initrd %s, %zu modules, %.2f s\n",
               res.paths.dir, jstr(m, "kernel_release"),
               human_size(json_integer_value(json_object_get(json_object_get(outs, "vmlinuz"), "size")), a, sizeof(a)),
               human_size(json_integer_value(json_object_get(json_object_get(outs, "initrd.cpio"), "size")), b, sizeof(b)),
               json_array_size(json_object_get(m, "module_order")),
               json_real_value(json_object_get(m, "build_seconds")));
        json_decref(m);
    } else {
        printf("image up to date (%s)\n", res.paths.dir);
    }
    free(res.manifest_json);
    return IC_EXIT_OK;
}

static void show_text(json_t *m)
{
    json_t *img = json_object_get(m, "image"), *in = json_object_get(m, "inputs");
    char sz[32];
    printf("image         %s\n", jstr(img, "dir"));
    static const char *const files[] = {"vmlinuz", "initrd", "manifest"};
    for (size_t i = 0; i < 3; i++) {
        json_t *f = json_object_get(img, files[i]);
        printf("  %-11s %s (%s)\n", files[i], jstr(f, "path"),
               human_size(json_integer_value(json_object_get(f, "size")), sz, sizeof(sz)));
    }
    json_t *vx = json_object_get(img, "vmlinux");
    if (json_is_object(vx))
        printf("  %-11s %s (%s; %s)\n", "vmlinux", jstr(vx, "path"),
               human_size(json_integer_value(json_object_get(vx, "size")), sz, sizeof(sz)),
               jstr(m, "vmlinux_from"));
    else
        printf("  %-11s none: %s\n", "vmlinux",
               json_string_value(json_object_get(m, "vmlinux_error")) ?: "built by an older ironclaw");
    printf("kernel        %s  (from %s)\n", jstr(m, "kernel_release"),
           jstr(json_object_get(in, "kernel"), "path"));
    json_t *gu = json_object_get(in, "guest"), *bb = json_object_get(in, "busybox");
    printf("guest agent   sha256 %s  (from %s)\n", jstr(gu, "sha256"), jstr(gu, "path"));
    printf("busybox       %s, %lld applets  (from %s)\n", jstr(bb, "version"),
           (long long)json_integer_value(json_object_get(m, "busybox_applets")), jstr(bb, "path"));
    printf("built at      %s in %.2f s\n", jstr(m, "built_at"),
           json_real_value(json_object_get(m, "build_seconds")));
    json_t *order = json_object_get(m, "module_order");
    printf("module order  (%zu, loaded by the guest agent in this order)\n", json_array_size(order));
    size_t i;
    json_t *v;
    json_array_foreach(order, i, v)
        printf("  %2zu %s\n", i + 1, json_string_value(v));
    json_t *changed = json_object_get(m, "changed_inputs");
    if (json_array_size(changed) == 0) {
        printf("inputs        unchanged since the build\n");
    } else {
        printf("inputs        CHANGED since the build:");
        json_array_foreach(changed, i, v)
            printf("%s %s", i ? "," : "", json_string_value(v));
        printf("; run `ironclaw image build`\n");
    }
}

static int cmd_show(int argc, char **argv)
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
        ic_cli_error("image show: unexpected argument '%s'", argv[optind]);
        return IC_EXIT_USAGE;
    }
    ic_err err = {0};
    json_t *m = NULL;
    int r = ic_image_show(NULL, NULL, &m, &err);
    if (r < 0)
        return ic_cli_fail(&err, exit_for(r));
    if (json) {
        json_dumpf(m, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
    } else {
        show_text(m);
    }
    json_decref(m);
    return IC_EXIT_OK;
}

int ic_cmd_image(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? IC_EXIT_USAGE : IC_EXIT_OK;
    }
    if (strcmp(argv[1], "build") == 0)
        return cmd_build(argc - 1, argv + 1);
    if (strcmp(argv[1], "show") == 0)
        return cmd_show(argc - 1, argv + 1);
    ic_cli_error("image: unknown subcommand '%s' (build or show)", argv[1]);
    return IC_EXIT_USAGE;
}
