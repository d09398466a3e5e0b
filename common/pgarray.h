/*
 * pgarray.h - PostgreSQL array literals in text form ("{a,b,\"c d\"}"),
 * the one place bulkreg writes and reads them: statements take arrays as
 * one text parameter ($1::uuid[], $1::text[]) and return uuid[] as text.
 *
 * Writing quotes an element where PostgreSQL's array syntax needs it
 * (empty, NULL, braces, commas, quotes, backslashes, white space) and
 * escapes quotes and backslashes inside; UUIDs and hex digits are written
 * as they are. The writer works in caller-supplied memory, so building a
 * literal allocates nothing; pga_bound gives the size that always fits.
 *
 * Reading iterates the elements of a one-dimensional literal whose
 * elements PostgreSQL never quotes (uuid[], int[]); elements point into
 * the literal (borrowed). Stateless apart from the caller's structs;
 * thread-safe.
 */
#ifndef BULKREG_PGARRAY_H
#define BULKREG_PGARRAY_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

/* A literal being written into buf[0..cap); the caller's memory. */
struct pga_writer {
	char *buf;
	size_t cap;
	size_t len;
	size_t n;      /* elements so far */
	bool overflow; /* something did not fit: pga_finish returns NULL */
};

/*
 * Bytes (with the NUL) that a literal of n elements of total_len bytes in
 * all can take at most, quoting and escaping included.
 */
size_t pga_bound(size_t n, size_t total_len);

/* Starts a literal in buf (writes "{"). */
void pga_start(struct pga_writer *w, char *buf, size_t cap);

/* Appends the element s[0..len), quoted when needed. */
void pga_add(struct pga_writer *w, const char *s, size_t len);

/*
 * Closes the literal: the NUL-terminated text in buf, or NULL when it did
 * not fit in cap (buf then holds no usable literal).
 */
const char *pga_finish(struct pga_writer *w);

/* Reads the elements of a literal. */
struct pga_reader {
	const char *p; /* the next element, or the closing brace */
};

/* Elements of the literal lit, or -1 when it is not a well-formed one. */
int pga_count(const char *lit);

/* Starts reading lit: BR_INVAL unless it opens with "{". */
br_status pga_read_start(struct pga_reader *r, const char *lit) BR_MUST_USE;

/*
 * The next element: *elem points into the literal, *len bytes long.
 * BR_NOTFOUND after the last one; BR_INVAL for a malformed literal or a
 * quoted element (never in a uuid[]).
 */
br_status pga_read_next(struct pga_reader *r, const char **elem, size_t *len) BR_MUST_USE;

#endif
