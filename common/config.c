/*
 * config.c - parsing of the README's environment variables.
 *
 * One table row per variable (its default, its kind, its field, its range
 * and error wording) drives the parsing, so all of it lives in one place. Pure functions over
 * caller-owned memory: thread-safe (cfg_load reads the environment, which
 * nothing in bulkreg writes after start-up).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mq.h"

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

/* One amqp:// URI or a comma-separated list of a cluster's node URIs. */
static bool amqp_url_ok(const char *s)
{
	struct mq_nodes nodes;
	br_status st = mq_nodes_parse(s, &nodes);
	mq_nodes_free(&nodes);
	return st == BR_OK;
}

/* Empty (derived from AMQP_URL), "off", or comma-separated http(s):// URLs. */
static bool mgmt_url_ok(const char *s)
{
	if (*s == '\0' || strcmp(s, "off") == 0)
		return true;
	for (;;) {
		while (*s == ' ')
			s++;
		size_t len = strcspn(s, ",");
		if (!has_prefix(s, "http://") && !has_prefix(s, "https://"))
			return false;
		if (strcspn(s, "/") + 2 >= len) /* nothing after the scheme */
			return false;
		if (s[len] == '\0')
			return true;
		s += len + 1;
	}
}

static bool pg_url_ok(const char *s)
{
	return has_prefix(s, "postgresql://") || has_prefix(s, "postgres://");
}

/*
 * The listening address is a numeric IPv4 or IPv6 address: a host name
 * (localhost) would need a resolver at start-up and could name several
 * addresses, so it is refused here, by name, rather than by the listener.
 */
static bool ip_literal_ok(const char *s)
{
	unsigned char addr[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

static bool http_prefix_ok(const char *s)
{
	return has_prefix(s, "https://") || has_prefix(s, "http://");
}

/* The setters of the variables no plain kind describes; each returns the wording of its error. */
static const char *set_retry_schedule(struct br_config *cfg, const char *v)
{
	if (cfg_parse_durations(v, cfg->webhook_retry_ms, CFG_RETRY_MAX, &cfg->webhook_retry_count))
		return "expected up to 32 comma-separated durations such as 5s,5m,2h";
	return NULL;
}

static const char *set_rate_limit(struct br_config *cfg, const char *v)
{
	return parse_rate(v, cfg) ? "expected 0 (off) or RATE/s[,BURST] such as 50/s,100" : NULL;
}

static const char *set_console(struct br_config *cfg, const char *v)
{
	if (strcmp(v, "auto") == 0)
		cfg->console = CFG_CONSOLE_AUTO;
	else if (strcmp(v, "on") == 0)
		cfg->console = CFG_CONSOLE_ON;
	else if (strcmp(v, "off") == 0)
		cfg->console = CFG_CONSOLE_OFF;
	else
		return "expected auto, on or off";
	return NULL;
}

static const char *set_log_format(struct br_config *cfg, const char *v)
{
	if (strcmp(v, "json") == 0)
		cfg->log_format = CFG_LOG_JSON;
	else if (strcmp(v, "text") == 0)
		cfg->log_format = CFG_LOG_TEXT;
	else
		return "expected json or text";
	return NULL;
}

static const char *set_log_level(struct br_config *cfg, const char *v)
{
	for (int l = CFG_LOG_DEBUG; l <= CFG_LOG_ERROR; l++) {
		if (strcmp(v, cfg_log_level_name((enum cfg_log_level)l)) == 0) {
			cfg->log_level = (enum cfg_log_level)l;
			return NULL;
		}
	}
	return "expected debug, info, warn or error";
}

/* How a variable's value is read and where it goes. */
enum cfg_kind {
	CFG_K_STR,    /* a string copied into a char array, checked by `check` when set */
	CFG_K_INT,    /* a decimal integer in [lo, hi], into an int */
	CFG_K_LONG,   /* ... into a long */
	CFG_K_UINT,   /* ... into an unsigned */
	CFG_K_SIZE,   /* ... into a size_t */
	CFG_K_BOOL01, /* "0" or "1", into a bool */
	CFG_K_SETTER, /* parsed by `set` */
};

struct cfg_var {
	const char *name;
	const char *def;
	enum cfg_kind kind;
	size_t off;  /* of the field in struct br_config */
	size_t size; /* of the field (a string's capacity) */
	long lo, hi;
	const char *why; /* the wording of a bad value; "too long" is a string's other one */
	bool (*check)(const char *v);
	const char *(*set)(struct br_config *cfg, const char *v);
};

/* clang-format cannot lay out _Generic. */
/* clang-format off */
#define CFG_FIELD(f) offsetof(struct br_config, f), sizeof(((struct br_config *)0)->f)
/* The integer kind follows the field's type, so the table cannot disagree with config.h. */
#define CFG_INT_KIND(f)                      \
	_Generic(((struct br_config *)0)->f, \
	         int: CFG_K_INT,             \
	         long: CFG_K_LONG,           \
	         unsigned: CFG_K_UINT,       \
	         size_t: CFG_K_SIZE)
#define CFG_STR(name, def, f, check, why) \
	{name, def, CFG_K_STR, CFG_FIELD(f), 0, 0, why, check, NULL}
#define CFG_NUM(name, def, f, lo, hi, why) \
	{name, def, CFG_INT_KIND(f), CFG_FIELD(f), lo, hi, why, NULL, NULL}
#define CFG_SET(name, def, set) \
	{name, def, CFG_K_SETTER, 0, 0, 0, 0, NULL, NULL, set}
/* clang-format on */

/* Every variable with its default, in the order of the README's table. */
static const struct cfg_var vars[] = {
    CFG_STR("DATABASE_URL", "postgresql://bulkreg@127.0.0.1:5432/bulkreg", database_url, pg_url_ok,
            "expected a postgresql:// URI"),
    CFG_STR("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", amqp_url, amqp_url_ok,
            "expected an amqp:// URI or a comma-separated list of up to 16 of them"),
    CFG_STR("BULKREG_API_BIND", "127.0.0.1", api_bind, ip_literal_ok,
            "expected a numeric IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or ::"),
    CFG_NUM("BULKREG_API_PORT", "8080", api_port, 1, 65535, "expected an integer from 1 to 65535"),
    CFG_NUM("BULKREG_MAX_TASKS", "50", max_tasks, 1, 100000,
            "expected an integer from 1 to 100000"),
    CFG_NUM("BULKREG_MAX_BODY_BYTES", "1048576", max_body_bytes, 1024, 1L << 30,
            "expected an integer from 1024 to 1073741824"),
    CFG_NUM("BULKREG_WORKER_CONCURRENCY", "4", worker_concurrency, 1, 256,
            "expected an integer from 1 to 256"),
    CFG_NUM("BULKREG_WORKER_PREFETCH", "16", worker_prefetch, 1, 65535,
            "expected an integer from 1 to 65535"),
    CFG_NUM("BULKREG_WORKER_METRICS_PORT", "9101", worker_metrics_port, 0, 65535,
            "expected an integer from 0 (off) to 65535"),
    CFG_NUM("BULKREG_WEBHOOK_TIMEOUT_MS", "15000", webhook_timeout_ms, 100, 600000,
            "expected milliseconds from 100 to 600000"),
    CFG_NUM("BULKREG_WEBHOOK_MAX_ENDPOINTS", "20", webhook_max_endpoints, 1, 1000,
            "expected an integer from 1 to 1000"),
    CFG_SET("BULKREG_WEBHOOK_RETRY_SCHEDULE", "5s,5m,30m,2h,5h,10h,10h", set_retry_schedule),
    {"BULKREG_WEBHOOK_ALLOW_PRIVATE", "0", CFG_K_BOOL01, CFG_FIELD(webhook_allow_private), 0, 1,
     "expected 0 or 1", NULL, NULL},
    CFG_SET("BULKREG_RATE_LIMIT", "50/s,100", set_rate_limit),
    CFG_STR("BULKREG_JOIN_URL_BASE", "https://join.example.com/s/", join_url_base, http_prefix_ok,
            "expected an http(s):// URL prefix"),
    CFG_NUM("BULKREG_SWEEP_INTERVAL_MS", "5000", sweep_interval_ms, 100, 3600000,
            "expected milliseconds from 100 to 3600000"),
    /* Beyond the product's configuration: how long a task may stay queued before the sweeper
       assumes its message was lost (a purged queue) and publishes it again. */
    CFG_NUM("BULKREG_STRANDED_AFTER_MS", "900000", stranded_after_ms, 1000, 7L * 86400 * 1000,
            "expected milliseconds from 1000 to 604800000"),
    /* The API's limits against hostile clients (docs/operations.md). */
    CFG_NUM("BULKREG_HTTP_MAX_CONNECTIONS", "1024", http_max_connections, 16, 65536,
            "expected an integer from 16 to 65536"),
    CFG_NUM("BULKREG_HTTP_MAX_CONNECTIONS_PER_IP", "128", http_max_connections_per_ip, 0, 65536,
            "expected an integer from 0 (no limit) to 65536"),
    CFG_NUM("BULKREG_HTTP_HEADER_TIMEOUT_MS", "20000", http_header_timeout_ms, 100, 3600000,
            "expected milliseconds from 100 to 3600000"),
    CFG_NUM("BULKREG_HTTP_BODY_TIMEOUT_MS", "60000", http_body_timeout_ms, 100, 3600000,
            "expected milliseconds from 100 to 3600000"),
    CFG_NUM("BULKREG_HTTP_IDLE_TIMEOUT_MS", "15000", http_idle_timeout_ms, 1000, 3600000,
            "expected milliseconds from 1000 to 3600000"),
    CFG_NUM("BULKREG_HTTP_BODY_BUDGET_BYTES", "67108864", http_body_budget_bytes, 1L << 20,
            1L << 40, "expected an integer from 1048576 to 1099511627776"),
    CFG_SET("BULKREG_CONSOLE", "auto", set_console),
    /* The RabbitMQ management API, read for the queue's members (docs/operations.md). */
    CFG_STR("BULKREG_MQ_MANAGEMENT_URL", "", mq_management_url, mgmt_url_ok,
            "expected off or http(s):// URLs separated by commas"),
    CFG_SET("BULKREG_LOG_FORMAT", "json", set_log_format),
    CFG_SET("BULKREG_LOG_LEVEL", "info", set_log_level),
};

/* Sets one variable as its table row says; returns the wording of the error, or NULL. */
static const char *cfg_set(struct br_config *cfg, const struct cfg_var *var, const char *v)
{
	char *field = (char *)cfg + var->off;
	long n;
	switch (var->kind) {
	case CFG_K_STR:
		if (var->check && !var->check(v))
			return var->why;
		return copy_str(field, var->size, v) ? "too long" : NULL;
	case CFG_K_BOOL01:
		if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
			return var->why;
		*(bool *)(void *)field = v[0] == '1';
		return NULL;
	case CFG_K_SETTER:
		return var->set(cfg, v);
	case CFG_K_INT:
	case CFG_K_LONG:
	case CFG_K_UINT:
	case CFG_K_SIZE:
		break;
	}
	if (parse_long(v, var->lo, var->hi, &n))
		return var->why;
	if (var->kind == CFG_K_INT)
		*(int *)(void *)field = (int)n;
	else if (var->kind == CFG_K_LONG)
		*(long *)(void *)field = n;
	else if (var->kind == CFG_K_UINT)
		*(unsigned *)(void *)field = (unsigned)n;
	else
		*(size_t *)(void *)field = (size_t)n;
	return NULL;
}

br_status cfg_load_with(struct br_config *cfg, cfg_lookup_fn lookup, void *ctx, char *err,
                        size_t errlen)
{
	struct br_config c;
	memset(&c, 0, sizeof(c));
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = lookup ? lookup(ctx, vars[i].name) : NULL;
		bool from_env = v && *v;
		const char *why = cfg_set(&c, &vars[i], from_env ? v : vars[i].def);
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
