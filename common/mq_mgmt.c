/*
 * mq_mgmt.c - a quorum queue's members from the RabbitMQ management HTTP
 * API (see mq_mgmt.h), over libcurl.
 *
 * Owns the node base URLs (each "http://host:port", without a trailing
 * slash), the credentials used for the nodes derived from AMQP_URL, and the
 * vhost, already escaped for a path. One easy handle per request: the
 * callers (/metrics, bulkreg-admin status) ask rarely. Thread-safety: see
 * mq_mgmt.h; `last` is read and written atomically.
 */
#include "mq_mgmt.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <curl/curl.h>
#include <jansson.h>

#include "mq.h"
#include "proc.h"
#include "strbuf.h"

#define MGMT_DEFAULT_PORT 15672
#define MGMT_BODY_MAX     (256 * 1024)
#define MGMT_MIN_TRY_MS   250

struct mq_mgmt {
	int n;
	char *base[MQ_MAX_NODES];
	char *user; /* from AMQP_URL, for the URLs without their own */
	char *password;
	char *vhost; /* escaped */
	int last;    /* atomic: the node that answered last */
};

void mq_mgmt_free(mq_mgmt *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n; i++)
		free(m->base[i]);
	free(m->user);
	free(m->password);
	free(m->vhost);
	free(m);
}

/* Adds base (len bytes, a trailing slash dropped) to m's URLs. */
static br_status mgmt_add(mq_mgmt *m, const char *base, size_t len)
{
	while (len > 0 && (base[len - 1] == '/' || base[len - 1] == ' '))
		len--;
	if (len == 0 || m->n == MQ_MAX_NODES)
		return BR_INVAL;
	m->base[m->n] = strndup(base, len);
	return m->base[m->n++] ? BR_OK : BR_NOMEM;
}

/* The nodes of an AMQP_URL, each as http://host:15672. */
static br_status mgmt_derive(mq_mgmt *m, const struct mq_nodes *nodes)
{
	br_status st = BR_OK;
	for (int i = 0; i < nodes->n && st == BR_OK; i++) {
		char *copy = strdup(nodes->url[i]);
		struct amqp_connection_info info;
		if (!copy)
			return BR_NOMEM;
		if (amqp_parse_url(copy, &info) != AMQP_STATUS_OK) {
			free(copy);
			return BR_INVAL;
		}
		char base[512];
		bool v6 = strchr(info.host, ':') != NULL;
		int len = snprintf(base, sizeof(base), "http://%s%s%s:%d", v6 ? "[" : "", info.host,
		                   v6 ? "]" : "", MGMT_DEFAULT_PORT);
		st = len > 0 && (size_t)len < sizeof(base) ? mgmt_add(m, base, (size_t)len)
		                                           : BR_INVAL;
		free(copy);
	}
	return st;
}

/*
 * The vhost of the first node of an AMQP_URL, escaped for a path ("/" is
 * "%2F"), and its user and password, for management URLs without their own.
 */
static br_status mgmt_vhost(mq_mgmt *m, const struct mq_nodes *nodes)
{
	char *copy = strdup(nodes->url[0]);
	struct amqp_connection_info info;
	if (!copy)
		return BR_NOMEM;
	br_status st = BR_INVAL;
	if (amqp_parse_url(copy, &info) == AMQP_STATUS_OK) {
		char *esc = curl_easy_escape(NULL, info.vhost[0] ? info.vhost : "/", 0);
		m->vhost = esc ? strdup(esc) : NULL;
		curl_free(esc);
		m->user = strdup(info.user);
		m->password = strdup(info.password);
		st = m->vhost && m->user && m->password ? BR_OK : BR_NOMEM;
	}
	free(copy);
	return st;
}

br_status mq_mgmt_new(const char *mgmt_urls, const char *amqp_urls, mq_mgmt **out)
{
	*out = NULL;
	if (strcmp(mgmt_urls, "off") == 0)
		return BR_OK;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return BR_NOMEM;
	struct mq_nodes nodes;
	br_status st = mq_nodes_parse(amqp_urls, &nodes);
	mq_mgmt *m = st == BR_OK ? calloc(1, sizeof(*m)) : NULL;
	if (st == BR_OK && !m)
		st = BR_NOMEM;
	if (st == BR_OK)
		st = mgmt_vhost(m, &nodes);
	if (st == BR_OK && *mgmt_urls == '\0') {
		st = mgmt_derive(m, &nodes);
	} else {
		for (const char *p = mgmt_urls; st == BR_OK; p += strcspn(p, ",") + 1) {
			while (*p == ' ')
				p++;
			st = mgmt_add(m, p, strcspn(p, ","));
			if (p[strcspn(p, ",")] == '\0')
				break;
		}
	}
	mq_nodes_free(&nodes);
	if (st != BR_OK) {
		mq_mgmt_free(m);
		return st;
	}
	*out = m;
	return BR_OK;
}

static size_t mgmt_write(char *data, size_t size, size_t nmemb, void *arg)
{
	strbuf *body = arg;
	return sb_append(body, data, size * nmemb) == BR_OK ? size * nmemb : 0;
}

/* Reads members and online from a queue's JSON. */
static br_status mgmt_parse(const char *body, struct mq_members *out, char *why, size_t whycap)
{
	json_t *q = json_loads(body, 0, NULL);
	json_t *members = json_object_get(q, "members");
	json_t *online = json_object_get(q, "online");
	br_status st = BR_OK;
	if (!json_is_array(members)) {
		snprintf(why, whycap, "the queue has no members (not a quorum queue?)");
		st = BR_NOTFOUND;
	} else {
		out->members = (int)json_array_size(members);
		out->online = json_is_array(online) ? (int)json_array_size(online) : 0;
	}
	json_decref(q);
	return st;
}

/* One GET of url within timeout_ms into body; the HTTP status, or 0 with why set. */
static long mgmt_get(const mq_mgmt *m, bool own_creds, const char *url, int timeout_ms,
                     strbuf *body, char *why, size_t whycap)
{
	CURL *e = curl_easy_init();
	char errbuf[CURL_ERROR_SIZE] = "";
	long status = 0;
	if (!e) {
		snprintf(why, whycap, "out of memory");
		return 0;
	}
	CURLcode rc = CURLE_OK;
	rc |= curl_easy_setopt(e, CURLOPT_URL, url);
	rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_PROXY, "");
	rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, mgmt_write);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
	rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	if (!own_creds) {
		rc |= curl_easy_setopt(e, CURLOPT_USERNAME, m->user);
		rc |= curl_easy_setopt(e, CURLOPT_PASSWORD, m->password);
	}
	if (rc != CURLE_OK) {
		snprintf(why, whycap, "cannot set up the request");
	} else if ((rc = curl_easy_perform(e)) != CURLE_OK) {
		snprintf(why, whycap, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
	} else {
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	}
	curl_easy_cleanup(e);
	return status;
}

br_status mq_mgmt_members(mq_mgmt *m, const char *queue, int timeout_ms, struct mq_members *out,
                          char *why, size_t whycap)
{
	char scratch[8];
	if (!why) {
		why = scratch;
		whycap = sizeof(scratch);
	}
	char *q = curl_easy_escape(NULL, queue, 0);
	if (!q)
		return BR_NOMEM;
	long long deadline = proc_now_ms() + timeout_ms;
	int first = __atomic_load_n(&m->last, __ATOMIC_RELAXED);
	br_status st = BR_HTTP;
	snprintf(why, whycap, "no management API URL");
	for (int i = 0; i < m->n && st == BR_HTTP; i++) {
		int k = (first + i) % m->n;
		long long left = deadline - proc_now_ms();
		int try_ms = (int)(left / (m->n - i));
		if (try_ms < MGMT_MIN_TRY_MS)
			try_ms = MGMT_MIN_TRY_MS;
		char url[1024];
		snprintf(url, sizeof(url), "%s/api/queues/%s/%s", m->base[k], m->vhost, q);
		bool own_creds = strchr(m->base[k], '@') != NULL;
		strbuf body;
		sb_init(&body, MGMT_BODY_MAX);
		long status = mgmt_get(m, own_creds, url, try_ms, &body, why, whycap);
		if (status == 200) {
			st = mgmt_parse(sb_str(&body), out, why, whycap);
		} else if (status == 404) {
			snprintf(why, whycap, "no queue %s", queue);
			st = BR_NOTFOUND;
		} else if (status != 0) {
			snprintf(why, whycap, "%s answered HTTP %ld", m->base[k], status);
		}
		sb_free(&body);
		if (st != BR_HTTP)
			__atomic_store_n(&m->last, k, __ATOMIC_RELAXED);
	}
	curl_free(q);
	return st;
}
