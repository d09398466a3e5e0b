/*
 * console_html.h - building the operator console's HTML (docs/console.md).
 *
 * Every byte of data that reaches a page goes through html_f's "{}"
 * placeholders, which escape it for text and quoted attribute values alike
 * (& < > " '): the one place the console escapes. Markup is only ever a
 * format string written here, never data.
 *
 * A struct html belongs to one request; not thread-safe, no global state.
 */
#ifndef BULKREG_API_CONSOLE_HTML_H
#define BULKREG_API_CONSOLE_HTML_H

#include <stdbool.h>

#include "http.h"
#include "strbuf.h"

/* Most bytes one page may have. */
#define HTML_MAX_BYTES ((size_t)4 << 20)

struct html {
	strbuf sb;
	br_status st; /* the first failure; once set, further writes do nothing */
};

void html_init(struct html *h);
void html_free(struct html *h);

/*
 * Appends fmt with each "{}" replaced by the next argument, a
 * NUL-terminated string (NULL writes nothing), escaped. fmt is markup:
 * a string literal. Everything else in fmt is copied as it is.
 */
void html_f(struct html *h, const char *fmt, ...);

/* Where the page is in the console's navigation (its link gets aria-current). */
enum html_nav {
	HTML_NAV_NONE,
	HTML_NAV_OVERVIEW,
	HTML_NAV_JOBS,
	HTML_NAV_DEAD,
	HTML_NAV_WEBHOOKS
};

/*
 * The page's head, the skip link, the header with its navigation and the
 * opening of <main>; operator (NULL on the login page) is shown with the
 * log-out form, which carries csrf.
 */
void html_page_start(struct html *h, const char *title, enum html_nav nav, const char *operator,
                     const char * csrf);
/* Closes <main> and the document. */
void html_page_end(struct html *h);

/*
 * A POST form of one button to action (a console path), with the CSRF
 * token; label is the button's text.
 */
void html_action(struct html *h, const char *action, const char *csrf, const char *label);

/*
 * Moves the page into resp as text/html with the console's security
 * headers (a Content-Security-Policy that allows nothing but this origin,
 * no caching, no framing). When building failed, answers 503 instead.
 */
void html_send(struct html *h, struct http_resp *resp, unsigned status);

/* The headers every console response carries (html_send adds them). */
void html_security_headers(struct http_resp *resp);

/* The console's stylesheet and script (console_assets.c). */
extern const char console_css[];
extern const char console_js[];

#endif
