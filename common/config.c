/*
 * config.c - parsing of CONTRACT §3's environment variables.
 *
 * Each variable is parsed by one small function from a table, so the
 * defaults, ranges and error wording live in one place. Pure functions over
 * caller-owned memory: thread-safe (cfg_load reads the environment, which
 * nothing in bulkreg writes after start-up).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>

static br_status cfg_fail(char *err, size_t errlen, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static br_status cfg_fail(char *err, size_t errlen, const char *name, const char *fmt, ...)
{
	if (errlen == 0)
		return BR_CONFIG;
	int n = snprintf(err, errlen, "%s: ", name);
	if (n >= 0 && (size_t)n < errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	/* The message is one line whatever bytes the value held. */
	for (char *p = err; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return BR_CONFIG;
}

/* A whole-string decimal integer in [lo, hi]. */
static br_status parse_long(const char *s, long lo, long hi, long *out)
{
	if (*s == '\0' || *s == ' ' || *s == '+')
		return BR_INVAL;
	errno = 0;
	char *end = NULL;
	long v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < lo || v > hi)
		return BR_INVAL;
	*out = v;
	return BR_OK;
}

br_status cfg_parse_durations(const char *s, long *out_ms, int max, int *count)
{
	int n = 0;
	const char *p = s;
	if (*p == '\0') {
		*count = 0;
		return BR_OK;
	}
	for (;;) {
		if (*p < '0' || *p > '9')
			return BR_INVAL;
		errno = 0;
		char *end = NULL;
		long v = strtol(p, &end, 10);
		if (errno != 0 || v < 0)
			return BR_INVAL;
		long mult;
		size_t ulen = 1;
		if (strncmp(end, "ms", 2) == 0) {
			mult = 1;
			ulen = 2;
		} else if (*end == 's') {
			mult = 1000;
		} else if (*end == 'm') {
			mult = 60L * 1000;
		} else if (*end == 'h') {
			mult = 3600L * 1000;
		} else if (*end == 'd') {
			mult = 86400L * 1000;
		} else {
			return BR_INVAL;
		}
		if (v > LONG_MAX / mult || n >= max)
			return BR_INVAL;
		out_ms[n++] = v * mult;
		p = end + ulen;
		if (*p == '\0')
			break;
		if (*p != ',')
			return BR_INVAL;
		p++;
	}
	*count = n;
	return BR_OK;
}

/* "0" = off, else "RATE/UNIT[,BURST]" with UNIT s, m or h. */
static br_status parse_rate(const char *s, struct br_config *cfg)
{
	if (strcmp(s, "0") == 0) {
		cfg->rate_limit_enabled = false;
		return BR_OK;
	}
	char num[32], *end = NULL;
	const char *slash = strchr(s, '/');
	if (!slash || (size_t)(slash - s) >= sizeof(num) || slash == s)
		return BR_INVAL;
	memcpy(num, s, (size_t)(slash - s));
	num[slash - s] = '\0';
	long rate;
	if (parse_long(num, 1, 1000000, &rate) != BR_OK)
		return BR_INVAL;
	double per;
	switch (slash[1]) {
	case 's':
		per = 1.0;
		break;
	case 'm':
		per = 60.0;
		break;
	case 'h':
		per = 3600.0;
		break;
	default:
		return BR_INVAL;
	}
	long burst = rate;
	const char *rest = slash + 2;
	if (*rest == ',') {
		errno = 0;
		burst = strtol(rest + 1, &end, 10);
		if (errno != 0 || rest[1] < '0' || rest[1] > '9' || *end != '\0' || burst < 1 ||
		    burst > 1000000)
			return BR_INVAL;
	} else if (*rest != '\0') {
		return BR_INVAL;
	}
	cfg->rate_limit_enabled = true;
	cfg->rate_limit_per_sec = (double)rate / per;
	cfg->rate_limit_burst = (int)burst;
	return BR_OK;
}

static br_status copy_str(char *dst, size_t cap, const char *s)
{
	size_t n = strlen(s);
	if (n >= cap)
		return BR_TOOBIG;
	memcpy(dst, s, n + 1);
	return BR_OK;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool amqp_url_ok(const char *s)
{
	char copy[CFG_URL_MAX];
	struct amqp_connection_info info;
	if (copy_str(copy, sizeof(copy), s) != BR_OK)
		return false;
	return amqp_parse_url(copy, &info) == AMQP_STATUS_OK;
}

/* Sets one variable; returns the wording of the error, or NULL when fine. */
static const char *cfg_set(struct br_config *cfg, const char *name, const char *v)
{
	long n;
	if (strcmp(name, "DATABASE_URL") == 0) {
		if (!has_prefix(v, "postgresql://") && !has_prefix(v, "postgres://"))
			return "expected a postgresql:// URI";
		return copy_str(cfg->database_url, sizeof(cfg->database_url), v) ? "too long"
		                                                                 : NULL;
	}
	if (strcmp(name, "AMQP_URL") == 0) {
		if (!amqp_url_ok(v))
			return "expected an amqp:// URI";
		return copy_str(cfg->amqp_url, sizeof(cfg->amqp_url), v) ? "too long" : NULL;
	}
	if (strcmp(name, "BULKREG_API_BIND") == 0)
		return copy_str(cfg->api_bind, sizeof(cfg->api_bind), v) ? "too long" : NULL;
	if (strcmp(name, "BULKREG_API_PORT") == 0) {
		if (parse_long(v, 1, 65535, &n))
			return "expected an integer from 1 to 65535";
		cfg->api_port = (int)n;
	} else if (strcmp(name, "BULKREG_MAX_TASKS") == 0) {
		if (parse_long(v, 1, 100000, &n))
			return "expected an integer from 1 to 100000";
		cfg->max_tasks = (int)n;
	} else if (strcmp(name, "BULKREG_MAX_BODY_BYTES") == 0) {
		if (parse_long(v, 1024, 1L << 30, &n))
			return "expected an integer from 1024 to 1073741824";
		cfg->max_body_bytes = (size_t)n;
	} else if (strcmp(name, "BULKREG_WORKER_CONCURRENCY") == 0) {
		if (parse_long(v, 1, 256, &n))
			return "expected an integer from 1 to 256";
		cfg->worker_concurrency = (int)n;
	} else if (strcmp(name, "BULKREG_WORKER_PREFETCH") == 0) {
		if (parse_long(v, 1, 65535, &n))
			return "expected an integer from 1 to 65535";
		cfg->worker_prefetch = (int)n;
	} else if (strcmp(name, "BULKREG_WORKER_METRICS_PORT") == 0) {
		if (parse_long(v, 0, 65535, &n))
			return "expected an integer from 0 (off) to 65535";
		cfg->worker_metrics_port = (int)n;
	} else if (strcmp(name, "BULKREG_WEBHOOK_TIMEOUT_MS") == 0) {
		if (parse_long(v, 100, 600000, &n))
			return "expected milliseconds from 100 to 600000";
		cfg->webhook_timeout_ms = (int)n;
	} else if (strcmp(name, "BULKREG_WEBHOOK_RETRY_SCHEDULE") == 0) {
		if (cfg_parse_durations(v, cfg->webhook_retry_ms, CFG_RETRY_MAX,
		                        &cfg->webhook_retry_count))
			return "expected up to 32 comma-separated durations such as 5s,5m,2h";
	} else if (strcmp(name, "BULKREG_WEBHOOK_ALLOW_PRIVATE") == 0) {
		if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
			return "expected 0 or 1";
		cfg->webhook_allow_private = v[0] == '1';
	} else if (strcmp(name, "BULKREG_RATE_LIMIT") == 0) {
		if (parse_rate(v, cfg))
			return "expected 0 (off) or RATE/s[,BURST] such as 50/s,100";
	} else if (strcmp(name, "BULKREG_JOIN_URL_BASE") == 0) {
		if (!has_prefix(v, "https://") && !has_prefix(v, "http://"))
			return "expected an http(s):// URL prefix";
		return copy_str(cfg->join_url_base, sizeof(cfg->join_url_base), v) ? "too long"
		                                                                   : NULL;
	} else if (strcmp(name, "BULKREG_SWEEP_INTERVAL_MS") == 0) {
		if (parse_long(v, 100, 3600000, &n))
			return "expected milliseconds from 100 to 3600000";
		cfg->sweep_interval_ms = (int)n;
	} else if (strcmp(name, "BULKREG_STRANDED_AFTER_MS") == 0) {
		if (parse_long(v, 1000, 7L * 86400 * 1000, &n))
			return "expected milliseconds from 1000 to 604800000";
		cfg->stranded_after_ms = n;
	} else if (strcmp(name, "BULKREG_HTTP_MAX_CONNECTIONS") == 0) {
		if (parse_long(v, 16, 65536, &n))
			return "expected an integer from 16 to 65536";
		cfg->http_max_connections = (unsigned)n;
	} else if (strcmp(name, "BULKREG_HTTP_MAX_CONNECTIONS_PER_IP") == 0) {
		if (parse_long(v, 0, 65536, &n))
			return "expected an integer from 0 (no limit) to 65536";
		cfg->http_max_connections_per_ip = (unsigned)n;
	} else if (strcmp(name, "BULKREG_HTTP_HEADER_TIMEOUT_MS") == 0) {
		if (parse_long(v, 100, 3600000, &n))
			return "expected milliseconds from 100 to 3600000";
		cfg->http_header_timeout_ms = (unsigned)n;
	} else if (strcmp(name, "BULKREG_HTTP_BODY_TIMEOUT_MS") == 0) {
		if (parse_long(v, 100, 3600000, &n))
			return "expected milliseconds from 100 to 3600000";
		cfg->http_body_timeout_ms = (unsigned)n;
	} else if (strcmp(name, "BULKREG_HTTP_IDLE_TIMEOUT_MS") == 0) {
		if (parse_long(v, 1000, 3600000, &n))
			return "expected milliseconds from 1000 to 3600000";
		cfg->http_idle_timeout_ms = (unsigned)n;
	} else if (strcmp(name, "BULKREG_HTTP_BODY_BUDGET_BYTES") == 0) {
		if (parse_long(v, 1L << 20, 1L << 40, &n))
			return "expected an integer from 1048576 to 1099511627776";
		cfg->http_body_budget_bytes = (size_t)n;
	} else if (strcmp(name, "BULKREG_LOG_FORMAT") == 0) {
		if (strcmp(v, "json") == 0)
			cfg->log_format = CFG_LOG_JSON;
		else if (strcmp(v, "text") == 0)
			cfg->log_format = CFG_LOG_TEXT;
		else
			return "expected json or text";
	} else if (strcmp(name, "BULKREG_LOG_LEVEL") == 0) {
		for (int l = CFG_LOG_DEBUG; l <= CFG_LOG_ERROR; l++) {
			if (strcmp(v, cfg_log_level_name((enum cfg_log_level)l)) == 0) {
				cfg->log_level = (enum cfg_log_level)l;
				return NULL;
			}
		}
		return "expected debug, info, warn or error";
	}
	return NULL;
}

/* Every variable with its default, in CONTRACT §3's order. */
static const struct {
	const char *name;
	const char *def;
} vars[] = {
    {"DATABASE_URL", "postgresql://bulkreg@127.0.0.1:5432/bulkreg"},
    {"AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"},
    {"BULKREG_API_BIND", "127.0.0.1"},
    {"BULKREG_API_PORT", "8080"},
    {"BULKREG_MAX_TASKS", "50"},
    {"BULKREG_MAX_BODY_BYTES", "1048576"},
    {"BULKREG_WORKER_CONCURRENCY", "4"},
    {"BULKREG_WORKER_PREFETCH", "16"},
    {"BULKREG_WORKER_METRICS_PORT", "9101"},
    {"BULKREG_WEBHOOK_TIMEOUT_MS", "10000"},
    {"BULKREG_WEBHOOK_RETRY_SCHEDULE", "5s,5m,30m,2h,5h,10h,10h"},
    {"BULKREG_WEBHOOK_ALLOW_PRIVATE", "0"},
    {"BULKREG_RATE_LIMIT", "50/s,100"},
    {"BULKREG_JOIN_URL_BASE", "https://join.example.com/s/"},
    {"BULKREG_SWEEP_INTERVAL_MS", "5000"},
    /* Beyond CONTRACT §3: how long a task may stay queued before the sweeper
       assumes its message was lost (a purged queue) and publishes it again. */
    {"BULKREG_STRANDED_AFTER_MS", "900000"},
    /* The API's limits against hostile clients (docs/operations.md). */
    {"BULKREG_HTTP_MAX_CONNECTIONS", "1024"},
    {"BULKREG_HTTP_MAX_CONNECTIONS_PER_IP", "128"},
    {"BULKREG_HTTP_HEADER_TIMEOUT_MS", "20000"},
    {"BULKREG_HTTP_BODY_TIMEOUT_MS", "60000"},
    {"BULKREG_HTTP_IDLE_TIMEOUT_MS", "15000"},
    {"BULKREG_HTTP_BODY_BUDGET_BYTES", "67108864"},
    {"BULKREG_LOG_FORMAT", "json"},
    {"BULKREG_LOG_LEVEL", "info"},
};

br_status cfg_load_with(struct br_config *cfg, cfg_lookup_fn lookup, void *ctx, char *err,
                        size_t errlen)
{
	struct br_config c;
	memset(&c, 0, sizeof(c));
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = lookup ? lookup(ctx, vars[i].name) : NULL;
		bool from_env = v && *v;
		const char *why = cfg_set(&c, vars[i].name, from_env ? v : vars[i].def);
		if (why) {
			/* Quote at most 80 bytes of the offending value. */
			return cfg_fail(err, errlen, vars[i].name, "%s, got \"%.80s\"", why,
			                from_env ? v : vars[i].def);
		}
	}
	*cfg = c;
	return BR_OK;
}

static const char *env_lookup(void *ctx, const char *name)
{
	(void)ctx;
	return getenv(name);
}

br_status cfg_load(struct br_config *cfg, char *err, size_t errlen)
{
	return cfg_load_with(cfg, env_lookup, NULL, err, errlen);
}

const char *cfg_log_level_name(enum cfg_log_level level)
{
	switch (level) {
	case CFG_LOG_DEBUG:
		return "debug";
	case CFG_LOG_INFO:
		return "info";
	case CFG_LOG_WARN:
		return "warn";
	case CFG_LOG_ERROR:
		return "error";
	}
	return "info";
}
