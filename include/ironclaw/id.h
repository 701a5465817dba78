/*
 * id.h - VM identities.
 *
 * Every VM has an internal id: 32 lowercase hex digits from the kernel's
 * random source. Paths, chain names and sockets derive from it alone. A
 * user-given name is only a label: it is validated here and never used to
 * build a path.
 */
#ifndef IRONCLAW_ID_H
#define IRONCLAW_ID_H

#include <stdbool.h>
#include <stddef.h>

#include "ironclaw/err.h"

#define IC_ID_LEN 32
#define IC_ID_SIZE (IC_ID_LEN + 1)
#define IC_NAME_MAX 255   /* a label: long names cost nothing, they reach no path */

int ic_id_new(char id[IC_ID_SIZE], ic_err *err);
/* Exactly IC_ID_LEN lowercase hex digits: safe as a path component. */
bool ic_id_valid(const char *id);
/* 1..IC_NAME_MAX characters from [A-Za-z0-9._-], not starting with '.' or '-'. */
int ic_name_validate(const char *name, ic_err *err);

#endif
