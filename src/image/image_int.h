/*
 * image_int.h - shared between the files of src/image only: the gathered,
 * fingerprinted inputs of one build.
 */
#ifndef IRONCLAW_IMAGE_INT_H
#define IRONCLAW_IMAGE_INT_H

#include "ironclaw/fsutil.h"
#include "ironclaw/image.h"

struct ic_image_hashed {
    char sha256[IC_SHA256_HEX];
    uint64_t size;
};

struct ic_image_inputs {
    char kernel[IC_PATH_MAX];          /* resolved (symlinks followed) */
    bool kernel_elf;                   /* an ELF vmlinux rather than a bzImage */
    char kernel_config[IC_PATH_MAX];   /* "config" next to the kernel, "" if none */
    char release[128];
    char modules_dir[IC_PATH_MAX];
    char guest[IC_PATH_MAX];
    char busybox[IC_PATH_MAX];
    char modules_list[IC_PATH_MAX];
    struct ic_image_hashed kernel_h, guest_h, busybox_h, modules_list_h, config_h;
    struct ic_modlist modules;         /* load order */
    struct ic_image_hashed *module_h;  /* parallel to modules */
    char busybox_version[96];
    char digest[IC_SHA256_HEX];        /* over all of the above but paths */
    char *applets;                     /* `busybox --list-full`, filled lazily */
};

int ic_image_inputs_gather(const struct ic_image_build_opts *o, const char *data_dir,
                           struct ic_image_inputs *in, ic_err *err);
/* Runs busybox --list-full once (only needed when actually building). */
int ic_image_inputs_applets(struct ic_image_inputs *in, ic_err *err);
void ic_image_inputs_free(struct ic_image_inputs *in);

#endif
