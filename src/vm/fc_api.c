/*
 * fc_api.c - Firecracker's API: the JSON bodies ironclaw sends, and one
 * HTTP/1.1 PUT over the API's Unix socket with a libcurl easy handle.
 *
 * The calls block, so the driver runs them in libuv's thread pool. Every
 * error answer is turned into a sentence that quotes Firecracker's own
 * fault_message, because that message is what tells the user what is
 * wrong (a kernel that cannot be loaded, a path the jail cannot see...).
 */
#include "vm/fc.h"

#include "ironclaw/cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

/* ---- request bodies ------------------------------------------------------- */

int ic_fc_check_machine(unsigned vcpus, unsigned mem_mib, ic_err *err)
{
    if (vcpus < 1 || vcpus > 32 || (vcpus > 1 && vcpus % 2 != 0))
        return ic_err_set(err, EINVAL,
                          "Firecracker takes 1 or an even number of vCPUs up to 32 (got %u)", vcpus);
    if (mem_mib < 64 || mem_mib > 65536)
        return ic_err_set(err, EINVAL, "memory must be between 64 and 65536 MiB (got %u)", mem_mib);
    return 0;
}

static char *dump(json_t *o)
{
    if (!o)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

char *ic_fc_body_logger(const char *log_path)
{
    return dump(json_pack("{s:s, s:s, s:b, s:b}", "log_path", log_path, "level", "Warning",
                          "show_level", 1, "show_log_origin", 0));
}

char *ic_fc_body_metrics(const char *metrics_path)
{
    return dump(json_pack("{s:s}", "metrics_path", metrics_path));
}

char *ic_fc_body_machine(unsigned vcpus, unsigned mem_mib)
{
    return dump(json_pack("{s:i, s:i, s:b}", "vcpu_count", (int)vcpus, "mem_size_mib",
                          (int)mem_mib, "smt", 0));
}

char *ic_fc_body_boot_source(const char *kernel, const char *initrd, const char *boot_args)
{
    json_t *o = json_pack("{s:s, s:s}", "kernel_image_path", kernel, "boot_args", boot_args);
    if (o && initrd)
        json_object_set_new(o, "initrd_path", json_string(initrd));
    return dump(o);
}

char *ic_fc_body_drive(const char *drive_id, const char *path, bool read_only)
{
    return dump(json_pack("{s:s, s:s, s:b, s:b}", "drive_id", drive_id, "path_on_host", path,
                          "is_root_device", 0, "is_read_only", read_only));
}

char *ic_fc_body_vsock(unsigned guest_cid, const char *uds_path)
{
    return dump(json_pack("{s:i, s:s}", "guest_cid", (int)guest_cid, "uds_path", uds_path));
}

char *ic_fc_body_net(const char *iface_id, const char *tap, const char *guest_mac)
{
    json_t *o = json_pack("{s:s, s:s}", "iface_id", iface_id, "host_dev_name", tap);
    if (o && guest_mac)
        json_object_set_new(o, "guest_mac", json_string(guest_mac));
    return dump(o);
}

char *ic_fc_body_action(const char *action_type)
{
    return dump(json_pack("{s:s}", "action_type", action_type));
}

bool ic_fc_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return false;
    return true;
}

/* ---- answers ---------------------------------------------------------------- */

/* Copies s into out, showing bytes that are not printable ASCII as \xNN
 * so that a hostile message cannot drive the user's terminal. */
static void printable(const char *s, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
    }
    out[o] = '\0';
}

int ic_fc_api_describe_error(const char *method, const char *path, long status,
                             const char *body, size_t len, ic_err *err)
{
    char text[IC_ERR_MSG_MAX];
    int r;
    json_t *o = len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *fault = json_string_value(json_object_get(o, "fault_message"));
    if (fault) {
        printable(fault, strlen(fault), text, sizeof(text));
        r = ic_err_set(err, EINVAL, "Firecracker refused %s %s (HTTP %ld): %s", method, path,
                       status, text);
    } else {
        printable(body ? body : "", len > 200 ? 200 : len, text, sizeof(text));
        r = ic_err_set(err, EPROTO,
                       "Firecracker answered %s %s with HTTP %ld and no fault_message%s%s", method,
                       path, status, len ? "; body: " : "", text);
    }
    json_decref(o);
    return r;
}

struct answer {
    char *buf;
    size_t len;
    bool too_big;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct answer *a = ud;
    size_t n = size * nmemb;
    if (a->len + n > IC_FC_API_BODY_MAX) {
        a->too_big = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    char *nb = realloc(a->buf, a->len + n + 1);
    if (!nb)
        return 0;
    memcpy(nb + a->len, p, n);
    a->len += n;
    nb[a->len] = '\0';
    a->buf = nb;
    return n;
}

static void cleanup_curl(CURL **c)
{
    if (*c)
        curl_easy_cleanup(*c);
}

static void cleanup_slist(struct curl_slist **l)
{
    curl_slist_free_all(*l);
}

int ic_fc_api_put(const char *sock, const char *path, const char *body, long timeout_ms,
                  ic_err *err)
{
    char url[256];
    if (path[0] != '/' || snprintf(url, sizeof(url), "http://localhost%s", path) >= (int)sizeof(url))
        return ic_err_set(err, EINVAL, "bad Firecracker API path '%s'", path);
    _cleanup_(cleanup_curl) CURL *c = curl_easy_init();
    if (!c)
        return ic_err_set(err, ENOMEM, "cannot create a libcurl handle");
    _cleanup_(cleanup_slist) struct curl_slist *hdr = NULL;
    static const char *const headers[] = {"Content-Type: application/json",
                                          "Accept: application/json", "Expect:"};
    for (size_t i = 0; i < 3; i++) {
        struct curl_slist *n = curl_slist_append(hdr, headers[i]);
        if (!n)
            return ic_err_set(err, ENOMEM, "out of memory");
        hdr = n;
    }
    struct answer a = {0};
    char curl_msg[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    CURLcode rc = curl_easy_perform(c);
    _cleanup_free_ char *buf = a.buf;
    if (rc != CURLE_OK) {
        if (a.too_big)
            return ic_err_set(err, EPROTO, "Firecracker's answer to PUT %s is larger than %zu bytes",
                              path, IC_FC_API_BODY_MAX);
        int code = rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT
                 : rc == CURLE_COULDNT_CONNECT    ? ECONNREFUSED
                                                  : EPROTO;
        return ic_err_set(err, code, "PUT %s on Firecracker's API socket failed: %s", path,
                          curl_msg[0] ? curl_msg : curl_easy_strerror(rc));
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300)
        return 0;
    return ic_fc_api_describe_error("PUT", path, status, buf, a.len, err);
}
