/*
 * fz_support.h - what the libFuzzer harnesses share: a NUL-terminated copy
 * of an input, and the checks that a response the code under test built is a
 * well-formed JSON:API document. A failed check aborts, which libFuzzer
 * reports as a crash with the input that caused it.
 *
 * Single-threaded, like the harnesses.
 */
#ifndef BULKREG_FZ_SUPPORT_H
#define BULKREG_FZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "http.h"

/* Aborts with a message on stderr when cond is false (also in release builds). */
#define FZ_CHECK(cond)                                      \
	do {                                                \
		if (!(cond))                                \
			fz_fail(__FILE__, __LINE__, #cond); \
	} while (0)

void fz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* A malloc'ed copy of data with a NUL after it; the caller frees it. Aborts on OOM. */
char *fz_cstr(const uint8_t *data, size_t size);

/*
 * Checks that resp holds a JSON:API error document with status as the
 * status of the response and of its first error: {"errors":[{"status",
 * "code", "title", ...}, ...]}, valid JSON (so valid UTF-8), every
 * source.pointer a string starting with "/".
 */
void fz_check_error_doc(const struct http_resp *resp, unsigned status);

/* An empty response, as the HTTP server hands it to a handler. */
void fz_resp_init(struct http_resp *resp);
void fz_resp_free(struct http_resp *resp);

#endif
