/*
 * fake_seccompiler.c - a test double of Firecracker's seccompiler-bin.
 *
 *   seccompiler-bin --version
 *   seccompiler-bin --target-arch x86_64 --input-file F [--output-file O] [--basic]
 *
 * It checks that the input is a JSON object of thread categories (the
 * real tool's job; ironclaw validates before, so this rarely triggers)
 * and writes "FAKEBPF v<version>\n" and the input's length to the output,
 * which the fake Firecracker accepts only from its own version.
 *
 *   FAKE_SECCOMPILER_VERSION  version to claim (default 1.7.0)
 *   FAKE_SECCOMPILER_ARGV_FILE  write argv here, one argument per line
 *   FAKE_SECCOMPILER_FAIL     print this as an error and exit 1
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

int main(int argc, char **argv)
{
    const char *ver = getenv("FAKE_SECCOMPILER_VERSION");
    ver = ver && *ver ? ver : "1.7.0";
    const char *rec = getenv("FAKE_SECCOMPILER_ARGV_FILE");
    FILE *r = rec ? fopen(rec, "we") : NULL;
    for (int i = 0; r && i < argc; i++)
        fprintf(r, "%s\n", argv[i]);
    if (r)
        fclose(r);
    const char *in = NULL, *out = "seccomp_binary_filter.out", *arch = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("seccompiler-bin v%s\n", ver);
            return 0;
        } else if (strcmp(argv[i], "--basic") == 0) {
            continue;
        } else if (i + 1 < argc && strcmp(argv[i], "--input-file") == 0) {
            in = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--output-file") == 0) {
            out = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--target-arch") == 0) {
            arch = argv[++i];
        } else {
            fprintf(stderr, "error: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    const char *fail = getenv("FAKE_SECCOMPILER_FAIL");
    if (fail) {
        fprintf(stderr, "Error: %s\n", fail);
        return 1;
    }
    if (!in || !arch || (strcmp(arch, "x86_64") != 0 && strcmp(arch, "aarch64") != 0)) {
        fprintf(stderr, "error: --input-file and --target-arch (x86_64 or aarch64) are required\n");
        return 2;
    }
    json_error_t je;
    json_t *j = json_load_file(in, 0, &je);
    if (!json_is_object(j) || !json_object_get(j, "vmm")) {
        fprintf(stderr, "Error: Json Frontend error: %s\n", j ? "no vmm filter" : je.text);
        return 1;
    }
    json_decref(j);
    FILE *o = fopen(out, "we");
    if (!o) {
        perror(out);
        return 1;
    }
    fprintf(o, "FAKEBPF v%s\n%s\n", ver, in);
    fclose(o);
    return 0;
}
