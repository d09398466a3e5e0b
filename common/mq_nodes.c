/*
 * mq_nodes.c - the node URIs of an AMQP_URL (see mq.h, mq_nodes_parse):
 * one amqp:// URI or a comma-separated list of a cluster's nodes. Pure
 * parsing, no connection: config.c checks AMQP_URL with it (and the config
 * fuzzer reaches it). Thread-safe: no shared state.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>

#include "mq.h"

void mq_nodes_free(struct mq_nodes *nodes)
{
	for (int i = 0; i < nodes->n; i++)
		free(nodes->url[i]);
	nodes->n = 0;
}

/* True when s (a NUL-terminated copy, modified) is an AMQP URI. */
static bool mq_url_ok(char *s)
{
	struct amqp_connection_info info;
	return amqp_parse_url(s, &info) == AMQP_STATUS_OK;
}

br_status mq_nodes_parse(const char *list, struct mq_nodes *out)
{
	memset(out, 0, sizeof(*out));
	const char *p = list;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		size_t len = strcspn(p, ",");
		size_t end = len;
		while (end > 0 && (p[end - 1] == ' ' || p[end - 1] == '\t'))
			end--;
		if (end == 0 || out->n == MQ_MAX_NODES)
			return BR_INVAL;
		char *url = strndup(p, end);
		char *check = url ? strdup(url) : NULL;
		bool ok = check && mq_url_ok(check);
		free(check);
		if (!url || !check) {
			free(url);
			return BR_NOMEM;
		}
		out->url[out->n++] = url;
		if (!ok)
			return BR_INVAL;
		if (p[len] == '\0')
			return BR_OK;
		p += len + 1;
	}
}
