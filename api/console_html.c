/*
 * console_html.c - the console's HTML builder and page frame (see
 * console_html.h). No global state; a struct html belongs to one request.
 */
#include "console_html.h"

#include <stdarg.h>
#include <string.h>

#include "log.h"

void html_init(struct html *h)
{
	sb_init(&h->sb, HTML_MAX_BYTES);
	h->st = BR_OK;
}

void html_free(struct html *h)
{
	sb_free(&h->sb);
}

static void put(struct html *h, const char *s, size_t n)
{
	if (h->st == BR_OK && n)
		h->st = sb_append(&h->sb, s, n);
}

/* The one escaping function of the console: text and quoted attribute values. */
static void put_escaped(struct html *h, const char *s)
{
	for (const char *run = s; s && h->st == BR_OK; s++) {
		const char *ent = NULL;
		switch (*s) {
		case '&':
			ent = "&amp;";
			break;
		case '<':
			ent = "&lt;";
			break;
		case '>':
			ent = "&gt;";
			break;
		case '"':
			ent = "&quot;";
			break;
		case '\'':
			ent = "&#39;";
			break;
		case '\0':
			put(h, run, (size_t)(s - run));
			return;
		default:
			continue;
		}
		put(h, run, (size_t)(s - run));
		put(h, ent, strlen(ent));
		run = s + 1;
	}
}

void html_f(struct html *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	const char *run = fmt;
	for (const char *p = strstr(fmt, "{}"); p; p = strstr(run, "{}")) {
		put(h, run, (size_t)(p - run));
		put_escaped(h, va_arg(ap, const char *));
		run = p + 2;
	}
	put(h, run, strlen(run));
	va_end(ap);
}

void html_page_start(struct html *h, const char *title, enum html_nav nav, const char *operator,
                     const char * csrf)
{
	static const struct {
		enum html_nav nav;
		const char *href, *label;
	} links[] = {{HTML_NAV_OVERVIEW, "/console", "Overview"},
	             {HTML_NAV_JOBS, "/console/jobs", "Jobs"},
	             {HTML_NAV_DEAD, "/console/dead", "Dead letters"},
	             {HTML_NAV_WEBHOOKS, "/console/webhooks", "Webhooks"}};
	html_f(h,
	       "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	       "<title>{} · bulkreg console</title>"
	       "<link rel=\"stylesheet\" href=\"/console/console.css\">"
	       "<script src=\"/console/console.js\" defer></script></head>\n<body>"
	       "<a class=\"skip\" href=\"#main\">Skip to content</a>"
	       "<header><p class=\"brand\">bulkreg console</p>",
	       title);
	if (operator) {
		html_f(h, "<nav aria-label=\"Console\"><ul>");
		for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
			html_f(h,
			       links[i].nav == nav
			           ? "<li><a href=\"{}\" aria-current=\"page\">{}</a></li>"
			           : "<li><a href=\"{}\">{}</a></li>",
			       links[i].href, links[i].label);
		html_f(h, "</ul></nav><div class=\"who\">Operator <strong>{}</strong>", operator);
		html_action(h, "/console/logout", csrf, "Log out");
		html_f(h, "</div>");
	}
	html_f(h, "</header>\n<main id=\"main\" tabindex=\"-1\"><h1>{}</h1>\n", title);
}

void html_page_end(struct html *h)
{
	html_f(h, "</main>\n</body></html>\n");
}

void html_action(struct html *h, const char *action, const char *csrf, const char *label)
{
	html_f(h,
	       "<form method=\"post\" action=\"{}\" class=\"action\">"
	       "<input type=\"hidden\" name=\"csrf\" value=\"{}\">"
	       "<button type=\"submit\">{}</button></form>",
	       action, csrf, label);
}

void html_security_headers(struct http_resp *resp)
{
	br_status st = http_resp_header(
	    resp, "Content-Security-Policy",
	    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
	    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
	if (st == BR_OK)
		st = http_resp_header(resp, "X-Content-Type-Options", "nosniff");
	if (st == BR_OK)
		st = http_resp_header(resp, "Referrer-Policy", "same-origin");
	if (st == BR_OK)
		st = http_resp_header(resp, "Cache-Control", "no-store");
	if (st != BR_OK)
		LOG_WARN("console: security headers lost: %s", br_strerror(st));
}

void html_send(struct html *h, struct http_resp *resp, unsigned status)
{
	html_security_headers(resp);
	sb_free(&resp->body);
	if (h->st != BR_OK) {
		LOG_WARN("console: page not built: %s", br_strerror(h->st));
		http_resp_error(resp, 503, "unavailable", "Service unavailable",
		                "The page could not be built.");
		return;
	}
	resp->status = status;
	resp->content_type = "text/html; charset=utf-8";
	resp->body = h->sb;
	sb_init(&h->sb, HTML_MAX_BYTES);
}
