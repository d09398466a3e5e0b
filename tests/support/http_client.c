/*
 * http_client.c - the tests' HTTP client over libcurl's easy interface (see
 * support.h).
 *
 * Each request uses its own easy handle and connection (no reuse), so a
 * server restarted by a fault test never sees a stale keep-alive
 * connection, and calls from several threads are independent. Global
 * state: curl_global_init, run once; t_resp_header's thread-local buffer.
 */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <criterion/criterion.h>
#include <curl/curl.h>

#include "strbuf.h"

#define T_HTTP_TIMEOUT_MS         30000
#define T_HTTP_CONNECT_TIMEOUT_MS 5000
#define T_HTTP_BODY_MAX           (64u << 20)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct capture {
	strbuf body;
	struct t_resp *r;
	size_t hlen;
	bool overflow;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct capture *c = ctx;
	size_t n = size * nmemb;
	if (sb_append(&c->body, data, n) != BR_OK) {
		c->overflow = true;
		return 0; /* aborts the transfer */
	}
	return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct capture *c = ctx;
	size_t n = size * nmemb;
	/* A new status line (after 100 Continue, say) starts a new header block. */
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		c->hlen = 0;
		c->r->headers[0] = '\0';
	}
	size_t room = sizeof(c->r->headers) - 1 - c->hlen;
	size_t take = n < room ? n : room;
	memcpy(c->r->headers + c->hlen, data, take);
	c->hlen += take;
	c->r->headers[c->hlen] = '\0';
	return n;
}

/* True when one of the "Name: value" lines names header name. */
static bool has_header(const char *const *headers, const char *name)
{
	size_t len = strlen(name);
	for (const char *const *h = headers; h && *h; h++) {
		if (strncasecmp(*h, name, len) == 0 && (*h)[len] == ':')
			return true;
	}
	return false;
}

bool t_http_try(struct t_resp *r, const char *method, const char *url, const char *token,
                const char *body, const char *const *extra_headers, int timeout_ms, char *err,
                size_t errlen)
{
	pthread_once(&curl_once, curl_init_once);
	memset(r, 0, sizeof(*r));
	if (err && errlen)
		err[0] = '\0';
	struct capture cap = {.r = r};
	sb_init(&cap.body, T_HTTP_BODY_MAX);
	struct curl_slist *hdrs = NULL;
	char auth[512], errbuf[CURL_ERROR_SIZE] = "";
	bool ok = false;

	CURL *h = curl_easy_init();
	if (!h) {
		snprintf(errbuf, sizeof(errbuf), "curl_easy_init failed");
		goto out;
	}
	for (const char *const *x = extra_headers; x && *x; x++)
		hdrs = curl_slist_append(hdrs, *x);
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (body && !has_header(extra_headers, "Content-Type"))
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	/* No "Expect: 100-continue" round trip on larger bodies. */
	hdrs = curl_slist_append(hdrs, "Expect:");

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
	                 (long)(timeout_ms > 0 ? timeout_ms : T_HTTP_TIMEOUT_MS));
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)T_HTTP_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &cap);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &cap);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") != 0 || body) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
	} else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
	           strcmp(method, "PATCH") == 0) {
		/* An empty body with Content-Length: 0, and no form content type. */
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
		if (!has_header(extra_headers, "Content-Type"))
			hdrs = curl_slist_append(hdrs, "Content-Type:");
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

	CURLcode rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		if (!errbuf[0] || cap.overflow)
			snprintf(errbuf, sizeof(errbuf), "%s%s", curl_easy_strerror(rc),
			         cap.overflow ? " (response body too large)" : "");
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	const char *loc = t_resp_header(r, "Location");
	if (loc)
		snprintf(r->location, sizeof(r->location), "%s", loc);
	r->body = sb_take(&cap.body);
	if (!r->body)
		r->body = strdup("");
	if (r->body && r->body[0])
		r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
	ok = r->body != NULL;
	if (!ok)
		snprintf(errbuf, sizeof(errbuf), "out of memory");
out:
	if (!ok) {
		r->status = 0;
		if (err && errlen)
			snprintf(err, errlen, "%s %s: %s", method, url, errbuf);
	}
	sb_free(&cap.body);
	curl_slist_free_all(hdrs);
	if (h)
		curl_easy_cleanup(h);
	return ok;
}

void t_http(struct t_resp *r, const char *method, const char *url, const char *token,
            const char *body, const char *const *extra_headers)
{
	char err[CURL_ERROR_SIZE + 512];
	if (!t_http_try(r, method, url, token, body, extra_headers, 0, err, sizeof(err)))
		cr_assert_fail("HTTP request failed: %s", err);
}

long t_http_status(const char *url, int timeout_ms)
{
	struct t_resp r;
	bool ok = t_http_try(&r, "GET", url, NULL, NULL, NULL, timeout_ms, NULL, 0);
	long status = ok ? r.status : 0;
	t_resp_free(&r);
	return status;
}

void t_resp_free(struct t_resp *r)
{
	free(r->body);
	r->body = NULL;
	json_decref(r->json);
	r->json = NULL;
}

const char *t_resp_header(const struct t_resp *r, const char *name)
{
	static __thread char value[1024];
	size_t nlen = strlen(name);
	const char *line = r->headers;
	while (*line) {
		const char *eol = strchr(line, '\n');
		size_t llen = eol ? (size_t)(eol - line) : strlen(line);
		if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			const char *v = line + nlen + 1;
			const char *end = line + llen;
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
				end--;
			size_t vlen = (size_t)(end - v);
			if (vlen >= sizeof(value))
				vlen = sizeof(value) - 1;
			memcpy(value, v, vlen);
			value[vlen] = '\0';
			return value;
		}
		if (!eol)
			break;
		line = eol + 1;
	}
	return NULL;
}
