/*
 * pgarray.c - PostgreSQL array literals (see pgarray.h). Stateless;
 * thread-safe. Quoting follows PostgreSQL's array input rules.
 */
#include "pgarray.h"

#include <string.h>
#include <strings.h>

size_t pga_bound(size_t n, size_t total_len)
{
	/* Each element: two quotes, a comma, every byte escaped; then "{}" and the NUL. */
	return 2 * total_len + 3 * n + 3;
}

static void put(struct pga_writer *w, char c)
{
	if (w->len + 1 >= w->cap) {
		w->overflow = true;
		return;
	}
	w->buf[w->len++] = c;
}

void pga_start(struct pga_writer *w, char *buf, size_t cap)
{
	w->buf = buf;
	w->cap = cap;
	w->len = 0;
	w->n = 0;
	w->overflow = cap == 0;
	put(w, '{');
	if (!w->overflow)
		w->buf[w->len] = '\0';
}

/* True when PostgreSQL's array input would not read s back as it is. */
static bool needs_quotes(const char *s, size_t len)
{
	if (len == 0 || (len == 4 && strncasecmp(s, "NULL", 4) == 0))
		return true;
	for (size_t i = 0; i < len; i++) {
		if (strchr("{}\",\\ \t\n\r\v\f", s[i]) || s[i] == '\0')
			return true;
	}
	return false;
}

void pga_add(struct pga_writer *w, const char *s, size_t len)
{
	if (w->n++)
		put(w, ',');
	bool quote = needs_quotes(s, len);
	if (quote)
		put(w, '"');
	for (size_t i = 0; i < len; i++) {
		if (quote && (s[i] == '"' || s[i] == '\\'))
			put(w, '\\');
		put(w, s[i]);
	}
	if (quote)
		put(w, '"');
	if (!w->overflow)
		w->buf[w->len] = '\0';
}

const char *pga_finish(struct pga_writer *w)
{
	put(w, '}');
	if (w->overflow)
		return NULL;
	w->buf[w->len] = '\0';
	return w->buf;
}

br_status pga_read_start(struct pga_reader *r, const char *lit)
{
	if (!lit || lit[0] != '{')
		return BR_INVAL;
	r->p = lit + 1;
	return BR_OK;
}

br_status pga_read_next(struct pga_reader *r, const char **elem, size_t *len)
{
	const char *p = r->p;
	if (*p == '}')
		return p[1] == '\0' ? BR_NOTFOUND : BR_INVAL;
	size_t n = strcspn(p, ",}\"{\\");
	if (n == 0 || (p[n] != ',' && p[n] != '}'))
		return BR_INVAL;
	if (p[n] == ',' && p[n + 1] == '}')
		return BR_INVAL;
	*elem = p;
	*len = n;
	r->p = p[n] == ',' ? p + n + 1 : p + n;
	return BR_OK;
}

int pga_count(const char *lit)
{
	struct pga_reader r;
	if (pga_read_start(&r, lit) != BR_OK)
		return -1;
	int n = 0;
	const char *elem;
	size_t len;
	br_status st;
	while ((st = pga_read_next(&r, &elem, &len)) == BR_OK)
		n++;
	return st == BR_NOTFOUND ? n : -1;
}
