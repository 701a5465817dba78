/*
 * id.c - random internal VM ids and validation of user-given names.
 */
#include "ironclaw/id.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int ic_id_new(char id[IC_ID_SIZE], ic_err *err)
{
    unsigned char raw[IC_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ic_err_sys(err, errno, "cannot get random bytes for a VM id");
        got += (size_t)n;
    }
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(raw); i++) {
        id[2 * i] = digits[raw[i] >> 4];
        id[2 * i + 1] = digits[raw[i] & 15];
    }
    id[IC_ID_LEN] = '\0';
    return 0;
}

bool ic_id_valid(const char *id)
{
    if (!id || strlen(id) != IC_ID_LEN)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int ic_name_validate(const char *name, ic_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > IC_NAME_MAX)
        return ic_err_set(err, EINVAL, "a VM name must be 1 to %d characters", IC_NAME_MAX);
    if (name[0] == '.' || name[0] == '-')
        return ic_err_set(err, EINVAL, "a VM name must not start with '.' or '-'");
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return ic_err_set(err, EINVAL,
                              "a VM name may only contain letters, digits, '.', '_' and '-'");
    }
    return 0;
}
