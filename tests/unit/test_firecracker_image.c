/*
 * test_firecracker_image.c - what Firecracker needs from the image and the
 * state record: the vmlinux extracted from a bzImage (every compression
 * the Debian tools handle, header fields and the scanning fallback, the
 * real Debian kernel when present), the ELF checks, the kernel release
 * from an ELF banner, the kernel configuration verdicts, and the reaping
 * of the record kinds the driver adds (a jail tree, a cgroup).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/image.h"
#include "ironclaw/state.h"
#include "ironclaw/vm.h"

#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[64];

static int make_tmp(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/ic-fci-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    return 0;
}

static int remove_tmp(void **state)
{
    ic_rm_rf(tmp, NULL);
    return 0;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static char *slurp(const char *path, size_t *len)
{
    char *text = NULL;
    ic_err err = {0};
    assert_int_equal(ic_file_read(path, 64u << 20, &text, len, &err), 0);
    return text;
}

/* A small but sound x86-64 ET_EXEC with one loadable segment and a banner. */
static size_t make_elf(unsigned char *buf, size_t size)
{
    memset(buf, 0, size);
    Elf64_Ehdr eh = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_phoff = sizeof(eh);
    eh.e_ehsize = sizeof(eh);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = 1;
    Elf64_Phdr ph = {.p_type = PT_LOAD, .p_offset = 0, .p_filesz = size, .p_memsz = size};
    memcpy(buf, &eh, sizeof(eh));
    memcpy(buf + sizeof(eh), &ph, sizeof(ph));
    static const char banner[] = "Linux version 6.1.99-fctest (builder@host) (gcc) #1 SMP";
    memcpy(buf + 512, banner, sizeof(banner));
    for (size_t i = 1024; i < size; i++)
        buf[i] = (unsigned char)(i * 7 + (i >> 9));
    return size;
}

/* A bzImage around `payload`: boot protocol `version`, payload fields. */
static void make_bzimage(const char *path, const void *payload, size_t plen, unsigned version)
{
    size_t setup = (size_t)(1 + 1) * 512, off = 300, total = setup + off + plen + 4;
    unsigned char *b = calloc(1, total);
    b[0x1f1] = 1;
    memcpy(b + 0x202, "HdrS", 4); // NOLINT(bugprone-not-null-terminated-result): a magic, not a string
    b[0x206] = (unsigned char)(version & 0xff);
    b[0x207] = (unsigned char)(version >> 8);
    uint32_t o = (uint32_t)off, l = (uint32_t)plen;
    if (version >= 0x208) {
        memcpy(b + 0x248, &o, 4);
        memcpy(b + 0x24c, &l, 4);
    }
    memcpy(b + setup + off, payload, plen);
    write_bytes(path, b, total);
    free(b);
}

static bool have(const char *tool)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

static void test_extract_every_codec(void **state)
{
    static const struct {
        const char *tool, *cmd;
    } codecs[] = {
        {"gzip", "gzip -9 -c"}, {"xz", "xz -c --check=crc32"}, {"zstd", "zstd -q -c"},
        {"lz4", "lz4 -q -l -c"}, {"bzip2", "bzip2 -c"}, {"xz", "xz -c --format=lzma"},
    };
    static unsigned char elf[256 * 1024];
    make_elf(elf, sizeof(elf));
    char raw[128], packed[128], bz[128], out[128], cmd[512];
    snprintf(raw, sizeof(raw), "%s/raw", tmp);
    snprintf(packed, sizeof(packed), "%s/packed", tmp);
    snprintf(bz, sizeof(bz), "%s/bzImage", tmp);
    snprintf(out, sizeof(out), "%s/vmlinux", tmp);
    write_bytes(raw, elf, sizeof(elf));
    int tried = 0;
    for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++) {
        if (!have(codecs[i].tool))
            continue;
        snprintf(cmd, sizeof(cmd), "%s <%s >%s", codecs[i].cmd, raw, packed);
        assert_int_equal(system(cmd), 0);
        size_t plen;
        char *p = slurp(packed, &plen);
        /* With the boot header's payload fields, then by scanning. */
        unsigned versions[] = {0x20f, 0x206};
        for (size_t v = 0; v < 2; v++) {
            make_bzimage(bz, p, plen, versions[v]);
            unlink(out);
            ic_err err = {0};
            char how[512] = "";
            if (ic_image_extract_vmlinux(bz, out, how, sizeof(how), &err) != 0)
                fail_msg("%s (protocol %#x): %s", codecs[i].cmd, versions[v], err.msg);
            size_t n;
            char *got = slurp(out, &n);
            assert_int_equal(n, sizeof(elf));
            assert_memory_equal(got, elf, sizeof(elf));
            free(got);
            assert_int_equal(ic_image_check_vmlinux(out, &err), 0);
        }
        free(p);
        tried++;
    }
    if (!tried)
        skip();
    ic_err err = {0};
    char rel[64];
    assert_int_equal(ic_image_vmlinux_release(out, rel, sizeof(rel), &err), 0);
    assert_string_equal(rel, "6.1.99-fctest");
}

static void test_extract_errors(void **state)
{
    char bz[128], out[128];
    snprintf(bz, sizeof(bz), "%s/bzImage", tmp);
    snprintf(out, sizeof(out), "%s/vmlinux", tmp);
    ic_err err = {0};
    char how[256];
    /* Not a bzImage. */
    write_bytes(bz, "plain text, no header at all", 28);
    assert_int_equal(ic_image_extract_vmlinux(bz, out, how, sizeof(how), &err), -ENOEXEC);
    /* A payload of an unknown compression. */
    make_bzimage(bz, "\x11\x22\x33\x44 not compressed", 20, 0x20f);
    assert_int_equal(ic_image_extract_vmlinux(bz, out, how, sizeof(how), &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "11 22 33 44"));
    /* gzip magic, garbage behind it: whatever came out is not a vmlinux. */
    make_bzimage(bz, "\x1f\x8b\x08 broken stream", 17, 0x20f);
    assert_true(ic_image_extract_vmlinux(bz, out, how, sizeof(how), &err) < 0);
    assert_false(ic_path_exists(out));
    /* The tool is missing: the Debian package is named. */
    const char *path = getenv("PATH");
    char *saved = strdup(path ? path : "");
    setenv("PATH", "/nonexistent", 1);
    make_bzimage(bz, "\x02\x21\x4c\x18 lz4", 8, 0x20f);
    assert_int_equal(ic_image_extract_vmlinux(bz, out, how, sizeof(how), &err), -ENOENT);
    setenv("PATH", saved, 1);
    free(saved);
    assert_non_null(strstr(err.msg, "Debian package lz4"));
}

static void test_check_vmlinux(void **state)
{
    static unsigned char elf[4096];
    char p[128];
    snprintf(p, sizeof(p), "%s/k", tmp);
    ic_err err = {0};
    make_elf(elf, sizeof(elf));
    write_bytes(p, elf, sizeof(elf));
    assert_int_equal(ic_image_check_vmlinux(p, &err), 0);

    Elf64_Ehdr *eh = (Elf64_Ehdr *)elf;
    Elf64_Phdr *ph = (Elf64_Phdr *)(elf + sizeof(*eh));
    /* Each damage, one at a time. */
    make_elf(elf, sizeof(elf));
    eh->e_type = ET_DYN;
    write_bytes(p, elf, sizeof(elf));
    assert_int_equal(ic_image_check_vmlinux(p, &err), -ENOEXEC);
    make_elf(elf, sizeof(elf));
    eh->e_machine = EM_AARCH64;
    write_bytes(p, elf, sizeof(elf));
    assert_int_equal(ic_image_check_vmlinux(p, &err), -ENOEXEC);
    make_elf(elf, sizeof(elf));
    eh->e_phnum = 1000;
    write_bytes(p, elf, sizeof(elf));
    assert_int_equal(ic_image_check_vmlinux(p, &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "program headers"));
    make_elf(elf, sizeof(elf));
    ph->p_filesz = 1 << 20;
    ph->p_memsz = 1 << 20;
    write_bytes(p, elf, sizeof(elf));
    assert_int_equal(ic_image_check_vmlinux(p, &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "outside the file"));
    make_elf(elf, sizeof(elf));
    ph->p_type = PT_NOTE;
    write_bytes(p, elf, sizeof(elf));
    assert_int_equal(ic_image_check_vmlinux(p, &err), -ENOEXEC);
    write_bytes(p, "MZ\x90\x00", 4);
    assert_int_equal(ic_image_check_vmlinux(p, &err), -ENOEXEC);
    write_bytes(p, elf, 100);
    assert_int_equal(ic_image_check_vmlinux(p, &err), -ENOEXEC);
}

/* The Debian cloud kernel scripts/setup.sh extracted, if this host has it. */
static void test_extract_debian_kernel(void **state)
{
    const char *data = getenv("IRONCLAW_DATA_DIR");
    char k[512], out[128];
    snprintf(k, sizeof(k), "%s/kernels/current/vmlinuz", data && *data ? data : "/var/lib/ironclaw");
    if (!ic_path_exists(k)) {
        print_message("skipped: no extracted Debian kernel at %s\n", k);
        skip();
    }
    snprintf(out, sizeof(out), "%s/vmlinux", tmp);
    ic_err err = {0};
    char how[512];
    int r = ic_image_extract_vmlinux(k, out, how, sizeof(how), &err);
    if (r == -ENOENT) {
        print_message("skipped: %s\n", err.msg);
        skip();
    }
    assert_int_equal(r, 0);
    assert_int_equal(ic_image_check_vmlinux(out, &err), 0);
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    assert_true(st.st_size > (8 << 20));
}

/* ---- configuration verdicts -------------------------------------------------------- */

static const char *const MODS[] = {"virtio_mmio", "vsock", "vmw_vsock_virtio_transport"};

static void test_config_verdicts(void **state)
{
    struct ic_image_fc_report rep;
    /* Firecracker's own guest config style: everything built in. */
    memset(&rep, 0, sizeof(rep));
    ic_image_fc_check_config("CONFIG_BLK_DEV_INITRD=y\nCONFIG_VIRTIO_MMIO=y\n"
                             "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\nCONFIG_VSOCKETS=y\n"
                             "CONFIG_VIRTIO_VSOCKETS=y\nCONFIG_SERIAL_8250_CONSOLE=y\n"
                             "CONFIG_KVM_GUEST=y\nCONFIG_VIRTIO_BLK=y\n", NULL, 0, &rep);
    assert_true(rep.ok);
    assert_string_equal(rep.problems, "");
    assert_string_equal(rep.warnings, "");

    /* Debian's cloud kernel: modules, and no command-line virtio devices. */
    memset(&rep, 0, sizeof(rep));
    const char *debian = "CONFIG_BLK_DEV_INITRD=y\nCONFIG_VIRTIO_MMIO=m\n"
                         "# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_ACPI=y\n"
                         "CONFIG_VSOCKETS=m\nCONFIG_VIRTIO_VSOCKETS=m\nCONFIG_SERIAL_8250_CONSOLE=y\n"
                         "CONFIG_KVM_GUEST=y\nCONFIG_VIRTIO_BLK=m\n";
    ic_image_fc_check_config(debian, MODS, 3, &rep);
    assert_true(rep.ok);
    assert_non_null(strstr(rep.warnings, "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set"));
    assert_non_null(strstr(rep.warnings, "ACPI"));

    /* ...but its modules must be in the image. */
    memset(&rep, 0, sizeof(rep));
    ic_image_fc_check_config(debian, MODS, 1, &rep);
    assert_false(rep.ok);
    assert_non_null(strstr(rep.problems, "no vsock module"));
    assert_non_null(strstr(rep.problems, "no vmw_vsock_virtio_transport module"));

    /* No vsock, no initramfs, no way to find devices. */
    memset(&rep, 0, sizeof(rep));
    ic_image_fc_check_config("CONFIG_BLK_DEV_INITRD=m\nCONFIG_VIRTIO_MMIO=y\n", NULL, 0, &rep);
    assert_false(rep.ok);
    assert_non_null(strstr(rep.problems, "CONFIG_BLK_DEV_INITRD=y is not set"));
    assert_non_null(strstr(rep.problems, "CONFIG_VSOCKETS is not set"));
    assert_non_null(strstr(rep.problems, "neither CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES nor CONFIG_ACPI"));
    /* A commented-out line is not a setting. */
    memset(&rep, 0, sizeof(rep));
    ic_image_fc_check_config("#CONFIG_VSOCKETS=y\n", NULL, 0, &rep);
    assert_non_null(strstr(rep.problems, "CONFIG_VSOCKETS is not set"));
}

static void test_image_check(void **state)
{
    struct ic_image_paths p = {0};
    snprintf(p.dir, sizeof(p.dir), "%s", tmp);
    snprintf(p.manifest, sizeof(p.manifest), "%s/manifest.json", tmp);
    struct ic_image_fc_report rep;
    ic_err err = {0};
    /* No vmlinux, no config. */
    assert_int_equal(ic_image_fc_check(&p, &rep, &err), 0);
    assert_false(rep.ok);
    assert_non_null(strstr(rep.problems, "no vmlinux"));
    assert_non_null(strstr(rep.warnings, "config is unknown"));
    /* A vmlinux and a good config. */
    static unsigned char elf[4096];
    snprintf(p.vmlinux, sizeof(p.vmlinux), "%s/vmlinux", tmp);
    write_bytes(p.vmlinux, elf, make_elf(elf, sizeof(elf)));
    char cfg[128];
    snprintf(cfg, sizeof(cfg), "%s/config", tmp);
    static const char good[] = "CONFIG_BLK_DEV_INITRD=y\nCONFIG_VIRTIO_MMIO=y\n"
                               "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\nCONFIG_VSOCKETS=y\n"
                               "CONFIG_VIRTIO_VSOCKETS=y\nCONFIG_SERIAL_8250_CONSOLE=y\n"
                               "CONFIG_KVM_GUEST=y\nCONFIG_VIRTIO_BLK=y\n";
    write_bytes(cfg, good, sizeof(good) - 1);
    assert_int_equal(ic_image_fc_check(&p, &rep, &err), 0);
    assert_true(rep.ok);
    assert_string_equal(rep.config, cfg);
    /* A bzImage where the vmlinux should be. */
    write_bytes(p.vmlinux, "MZ bzImage", 10);
    assert_int_equal(ic_image_fc_check(&p, &rep, &err), 0);
    assert_false(rep.ok);
    assert_non_null(strstr(rep.problems, "not an ELF file"));
}

/* ---- the driver's record kinds ------------------------------------------------------- */

#define VMID "fedcba9876543210fedcba9876543210"

static void test_reap_tree_and_cgroup(void **state)
{
    char rt[128], tree[192], sub[256], link[256], cg[192], keep[192];
    snprintf(rt, sizeof(rt), "%s/rt", tmp);
    snprintf(tree, sizeof(tree), "%s/jail/firecracker/%s", tmp, VMID);
    snprintf(sub, sizeof(sub), "%s/root/dev", tree);
    snprintf(link, sizeof(link), "%s/root/escape", tree);
    snprintf(cg, sizeof(cg), "%s/cgroup-like", tmp);
    snprintf(keep, sizeof(keep), "%s/precious", tmp);
    ic_err err = {0};
    assert_int_equal(ic_mkdir_p(sub, 0755, &err), 0);
    assert_int_equal(ic_mkdir_p(cg, 0755, &err), 0);
    assert_int_equal(ic_mkdir_p(keep, 0755, &err), 0);
    /* A symlink in the jail pointing out of it must not be followed. */
    assert_int_equal(symlink(keep, link), 0);
    ic_state *st = NULL;
    assert_int_equal(ic_state_create(rt, VMID, "", "firecracker", &st, &err), 0);
    assert_int_equal(ic_state_add(st, IC_RES_TREE, "fc-jail", tree, &err), 0);
    assert_int_equal(ic_state_add(st, IC_RES_CGROUP, "fc-cgroup", cg, &err), 0);
    char vmdir[256];
    snprintf(vmdir, sizeof(vmdir), "%s", ic_state_dir(st));
    assert_int_equal(ic_vm_reap_record(st, &err), 0);
    ic_state_free(st);
    assert_false(ic_path_exists(tree));
    assert_false(ic_path_exists(cg));
    assert_false(ic_path_exists(vmdir));
    assert_true(ic_path_exists(keep));

    /* A path that is not plain is refused, and the record is kept for gc. */
    assert_int_equal(ic_state_create(rt, VMID, "", "firecracker", &st, &err), 0);
    char bad[256];
    snprintf(bad, sizeof(bad), "%s/jail/../precious", tmp);
    assert_int_equal(ic_state_add(st, IC_RES_TREE, "fc-jail", bad, &err), 0);
    ic_err_clear(&err);
    assert_int_equal(ic_vm_reap_record(st, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "refusing"));
    assert_true(ic_path_exists(keep));
    assert_true(ic_path_exists(ic_state_dir(st)));
    ic_state_free(st);
}

int main(int argc, char **argv)
{
    ic_vm_launch_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_extract_every_codec, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_extract_errors, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_check_vmlinux, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_extract_debian_kernel, make_tmp, remove_tmp),
        cmocka_unit_test(test_config_verdicts),
        cmocka_unit_test_setup_teardown(test_image_check, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_reap_tree_and_cgroup, make_tmp, remove_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
