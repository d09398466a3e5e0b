/*
 * strbuf.h - a growable byte string with a hard size cap.
 *
 * Modelled on curl's dynbuf: every append either succeeds whole or fails,
 * and a failed append frees the buffer so a half-built string can never be
 * used by mistake. The content is always NUL-terminated when non-empty.
 *
 * Not thread-safe; a strbuf belongs to whoever declared it.
 */
#ifndef BULKREG_STRBUF_H
#define BULKREG_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

#include "status.h"

typedef struct {
	char *buf;  /* NULL until the first append */
	size_t len; /* bytes used, excluding the NUL */
	size_t cap; /* bytes allocated */
	size_t max; /* most bytes len may reach */
} strbuf;

/* Starts empty; max is the largest length the content may reach. */
void sb_init(strbuf *sb, size_t max);

/* Frees the content and leaves an empty buffer with the same cap. */
void sb_free(strbuf *sb);

/* Empties the content but keeps the allocation. */
void sb_reset(strbuf *sb);

/* Appends len bytes. BR_TOOBIG past max, BR_NOMEM; both free the buffer. */
br_status sb_append(strbuf *sb, const void *data, size_t len) BR_MUST_USE;

/* Appends a NUL-terminated string, as sb_append. */
br_status sb_appends(strbuf *sb, const char *s) BR_MUST_USE;

/* Appends printf-formatted text, as sb_append. */
br_status sb_appendf(strbuf *sb, const char *fmt, ...) BR_MUST_USE
    __attribute__((format(printf, 2, 3)));
br_status sb_vappendf(strbuf *sb, const char *fmt, va_list ap) BR_MUST_USE
    __attribute__((format(printf, 2, 0)));

/* Appends s as the body of a JSON string (escaped, no quotes). */
br_status sb_append_json_escaped(strbuf *sb, const char *s, size_t len) BR_MUST_USE;

/* The content, "" when empty; borrowed, valid until the next call. */
const char *sb_str(const strbuf *sb);

/* Hands the content to the caller (free() it) and empties sb; NULL if empty. */
char *sb_take(strbuf *sb);

#endif
