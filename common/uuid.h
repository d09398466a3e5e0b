/*
 * uuid.h - UUIDs as text: the one length constant and the one validator.
 *
 * PostgreSQL reads a uuid in the 8-4-4-4-12 form with hex digits of either
 * case, and always writes it in lower case. Input from clients (path
 * segments, query filters) may be in either case, as PostgreSQL accepts;
 * text that PostgreSQL or bulkreg wrote (task messages) must be the
 * lower-case form, so anything else there is corrupt. Each caller says
 * which of the two it expects. Stateless; thread-safe.
 */
#ifndef BULKREG_UUID_H
#define BULKREG_UUID_H

#include <stdbool.h>
#include <stddef.h>

/* Characters of a UUID in its 8-4-4-4-12 text form, without the NUL. */
#define UUID_LEN 36

enum uuid_case {
	UUID_ANY_CASE,   /* hex digits a-f or A-F: what PostgreSQL reads */
	UUID_LOWER_CASE, /* only a-f: what PostgreSQL writes */
};

/* True when s[0..len) is a UUID in the 8-4-4-4-12 form, in the case allowed. */
bool uuid_valid(const char *s, size_t len, enum uuid_case allowed);

#endif
