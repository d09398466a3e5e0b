/*
 * fuzz_config.c - libFuzzer harness for the configuration parser
 * (common/config.h, cfg_load_with).
 *
 * The input is split on NUL bytes into values, handed out in the order
 * cfg_load_with asks for the variables, that of config.c's table (the
 * README's order). An empty value counts as unset, so "\0\0x" sets only
 * the third variable; values past the last variable are never asked for.
 *
 * Checks: a loaded configuration is within every documented range and its
 * strings are terminated; a refusal names a variable and is one line. The
 * error buffer is sized from the input (0 to 15 bytes for half the inputs,
 * 256 for the others) on the heap, so that ASan sees any write past errlen.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fz_support.h"

/* More than config.c has, so that every variable can get a value. */
#define MAX_VALUES 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The values, handed out in the order cfg_load_with asks for variables
 * (its table's order), and the names it asked for.
 */
struct values {
	const char *v[MAX_VALUES];
	const char *asked[MAX_VALUES];
	int nasked;
};

static const char *lookup(void *ctx, const char *name)
{
	struct values *vals = ctx;
	FZ_CHECK(name != NULL && vals->nasked < MAX_VALUES);
	for (int i = 0; i < vals->nasked; i++)
		FZ_CHECK(strcmp(vals->asked[i], name) != 0); /* each variable once */
	vals->asked[vals->nasked] = name;
	return vals->v[vals->nasked++];
}

static void check_config(const struct br_config *c)
{
	FZ_CHECK(memchr(c->database_url, '\0', sizeof(c->database_url)));
	FZ_CHECK(memchr(c->amqp_url, '\0', sizeof(c->amqp_url)));
	FZ_CHECK(memchr(c->api_bind, '\0', sizeof(c->api_bind)));
	FZ_CHECK(memchr(c->join_url_base, '\0', sizeof(c->join_url_base)));
	FZ_CHECK(c->api_port >= 1 && c->api_port <= 65535);
	FZ_CHECK(c->max_tasks >= 1 && c->max_tasks <= 100000);
	FZ_CHECK(c->max_body_bytes >= 1024 && c->max_body_bytes <= ((size_t)1 << 30));
	FZ_CHECK(c->worker_concurrency >= 1 && c->worker_concurrency <= 256);
	FZ_CHECK(c->worker_prefetch >= 1 && c->worker_prefetch <= 65535);
	FZ_CHECK(c->worker_metrics_port >= 0 && c->worker_metrics_port <= 65535);
	FZ_CHECK(c->webhook_timeout_ms >= 100 && c->webhook_timeout_ms <= 600000);
	FZ_CHECK(c->webhook_retry_count >= 0 && c->webhook_retry_count <= CFG_RETRY_MAX);
	for (int i = 0; i < c->webhook_retry_count; i++)
		FZ_CHECK(c->webhook_retry_ms[i] >= 0);
	if (c->rate_limit_enabled)
		FZ_CHECK(c->rate_limit_per_sec > 0 && c->rate_limit_burst >= 1 &&
		         c->rate_limit_burst <= 1000000);
	FZ_CHECK(c->sweep_interval_ms >= 100 && c->sweep_interval_ms <= 3600000);
	FZ_CHECK(c->stranded_after_ms >= 1000 && c->stranded_after_ms <= 7L * 86400 * 1000);
	FZ_CHECK(c->log_format == CFG_LOG_JSON || c->log_format == CFG_LOG_TEXT);
	FZ_CHECK(c->log_level >= CFG_LOG_DEBUG && c->log_level <= CFG_LOG_ERROR);
}

/* A refusal is one line, within errlen, that starts with "NAME: ". */
static void check_error(const char *err, size_t errlen, const char *name)
{
	if (errlen == 0)
		return;
	size_t len = strnlen(err, errlen);
	FZ_CHECK(len < errlen);
	for (size_t i = 0; i < len; i++)
		FZ_CHECK((unsigned char)err[i] >= 0x20 && err[i] != 0x7f);
	size_t nlen = strlen(name);
	if (errlen > nlen + 2)
		FZ_CHECK(strncmp(err, name, nlen) == 0 && strncmp(err + nlen, ": ", 2) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fz_cstr(data, size);
	struct values vals;
	memset(&vals, 0, sizeof(vals));
	char *p = buf, *end = buf + size;
	for (int i = 0; i < MAX_VALUES && p <= end; i++) {
		vals.v[i] = p;
		p += strlen(p) + 1;
	}

	/* 0-15 bytes for one input in two, a roomy 256 otherwise. */
	size_t errlen = size % 32 < 16 ? size % 16 : 256;
	char *err = malloc(errlen ? errlen : 1);
	FZ_CHECK(err != NULL);
	struct br_config cfg;
	br_status st = cfg_load_with(&cfg, lookup, &vals, err, errlen);
	if (st == BR_OK) {
		check_config(&cfg);
	} else {
		FZ_CHECK(st == BR_CONFIG && vals.nasked > 0);
		check_error(err, errlen, vals.asked[vals.nasked - 1]);
	}
	free(err);
	free(buf);
	return 0;
}
