/*
 * http_form.c - form fields through libmicrohttpd's post processor (see
 * http_form.h).
 *
 * The post processor hands a field's value over in pieces (data at offset
 * off of the value); pieces of one value arrive in order, so a piece at a
 * non-zero offset continues the last field. A form owns its fields; it is
 * filled by one thread and then only read.
 */
#include "http_form.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "strbuf.h"

/* The post processor's buffer: room for a boundary of RFC 2046's 70 bytes, twice. */
#define HTTP_FORM_PP_BUFFER 4096

struct form_field {
	char *name;
	strbuf value;
	bool empty_call; /* created by a zero-length piece: the next piece at 0 continues it */
};

struct http_form {
	struct form_field f[HTTP_FORM_MAX_FIELDS];
	int n;
	size_t bytes;
	size_t max_bytes;
	br_status st; /* why the iterator stopped, when it did */
};

bool http_form_type(const char *ct)
{
	if (!ct)
		return false;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	size_t n = strcspn(ct, "; \t");
	return (n == 19 && strncasecmp(ct, "multipart/form-data", 19) == 0) ||
	       (n == 33 && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0);
}

/* A new field named key; BR_TOOBIG past a bound. */
static br_status field_new(http_form *f, const char *key, bool empty)
{
	size_t klen = strlen(key);
	if (f->n >= HTTP_FORM_MAX_FIELDS || klen > HTTP_FORM_NAME_MAX ||
	    klen > f->max_bytes - f->bytes)
		return BR_TOOBIG;
	struct form_field *fd = &f->f[f->n];
	fd->name = malloc(klen + 1);
	if (!fd->name)
		return BR_NOMEM;
	memcpy(fd->name, key, klen + 1);
	sb_init(&fd->value, f->max_bytes);
	fd->empty_call = empty;
	f->bytes += klen;
	f->n++;
	return BR_OK;
}

static br_status take_piece(http_form *f, const char *key, const char *data, uint64_t off,
                            size_t size)
{
	struct form_field *last = f->n ? &f->f[f->n - 1] : NULL;
	bool same = last && strcmp(last->name, key) == 0;
	br_status st = BR_OK;
	if (off == 0 && !(same && last->empty_call && last->value.len == 0)) {
		st = field_new(f, key, size == 0);
		if (st != BR_OK)
			return st;
		last = &f->f[f->n - 1];
	} else if (!same || off != last->value.len) {
		return BR_INVAL; /* a piece that continues no field */
	}
	if (size == 0)
		return BR_OK;
	last->empty_call = false;
	if (size > f->max_bytes - f->bytes)
		return BR_TOOBIG;
	st = sb_append(&last->value, data, size);
	if (st == BR_OK)
		f->bytes += size;
	return st;
}

static enum MHD_Result on_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *filename, const char *content_type,
                                const char *transfer_encoding, const char *data, uint64_t off,
                                size_t size)
{
	(void)kind;
	(void)filename; /* a file part (curl -F name=@file) is a field like any other */
	(void)content_type;
	(void)transfer_encoding;
	http_form *f = cls;
	if (!key) {
		f->st = BR_INVAL;
		return MHD_NO;
	}
	br_status st = take_piece(f, key, data ? data : "", off, data ? size : 0);
	if (st != BR_OK) {
		f->st = st;
		return MHD_NO;
	}
	return MHD_YES;
}

br_status http_form_parse(struct MHD_Connection *conn, const char *body, size_t len,
                          size_t max_bytes, http_form **out)
{
	http_form *f = calloc(1, sizeof(*f));
	if (!f)
		return BR_NOMEM;
	f->max_bytes = max_bytes;
	f->st = BR_OK;
	struct MHD_PostProcessor *pp =
	    MHD_create_post_processor(conn, HTTP_FORM_PP_BUFFER, on_field, f);
	if (!pp) {
		http_form_free(f);
		return BR_INVAL; /* no form type, or a boundary missing or too long */
	}
	bool ok = len == 0 || MHD_post_process(pp, body, len) == MHD_YES;
	/* Destroying delivers a last urlencoded value; MHD_NO: the body ended mid-form. */
	ok = MHD_destroy_post_processor(pp) == MHD_YES && ok;
	br_status st = f->st != BR_OK ? f->st : ok ? BR_OK : BR_INVAL;
	if (st != BR_OK) {
		http_form_free(f);
		return st;
	}
	*out = f;
	return BR_OK;
}

const char *http_form_get(const http_form *f, const char *name, size_t *len)
{
	for (int i = 0; f && i < f->n; i++) {
		if (strcmp(f->f[i].name, name) == 0) {
			if (len)
				*len = f->f[i].value.len;
			return sb_str(&f->f[i].value);
		}
	}
	return NULL;
}

int http_form_count(const http_form *f)
{
	return f ? f->n : 0;
}

const char *http_form_name(const http_form *f, int i)
{
	return f && i >= 0 && i < f->n ? f->f[i].name : NULL;
}

const char *http_form_value(const http_form *f, int i, size_t *len)
{
	if (!f || i < 0 || i >= f->n)
		return NULL;
	*len = f->f[i].value.len;
	return sb_str(&f->f[i].value);
}

size_t http_form_bytes(const http_form *f)
{
	return f ? f->bytes : 0;
}

void http_form_free(http_form *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->n; i++) {
		free(f->f[i].name);
		sb_free(&f->f[i].value);
	}
	free(f);
}
