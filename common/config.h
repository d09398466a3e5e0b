/*
 * config.h - bulkreg's configuration, read once at start-up from the
 * environment (README.md, Configuration). Every variable has a default; an empty value
 * counts as unset. A bad value yields BR_CONFIG and a one-line message that
 * names the variable; the programs print it and exit with status 2.
 *
 * A loaded br_config is plain data: share it read-only between threads.
 */
#ifndef BULKREG_CONFIG_H
#define BULKREG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define CFG_URL_MAX     1024
#define CFG_RETRY_MAX   32
#define CFG_CONFIG_EXIT 2

enum cfg_log_format {
	CFG_LOG_JSON,
	CFG_LOG_TEXT
};
enum cfg_log_level {
	CFG_LOG_DEBUG,
	CFG_LOG_INFO,
	CFG_LOG_WARN,
	CFG_LOG_ERROR
};

/* BULKREG_CONSOLE: when the API serves the operator console (docs/console.md). */
enum cfg_console {
	CFG_CONSOLE_AUTO, /* on a loopback bind address, or once an operator token exists */
	CFG_CONSOLE_ON,
	CFG_CONSOLE_OFF
};

struct br_config {
	char database_url[CFG_URL_MAX];
	char amqp_url[CFG_URL_MAX]; /* one node URI, or a comma-separated list of a cluster's */
	/* Management API base URLs ("" = derived from amqp_url's hosts, port 15672; "off"). */
	char mq_management_url[CFG_URL_MAX];
	char api_bind[64];
	int api_port;
	int max_tasks;
	size_t max_body_bytes;
	int worker_concurrency;
	int worker_prefetch;
	int worker_metrics_port; /* 0 = off */
	int webhook_timeout_ms;
	int webhook_max_endpoints;            /* per organization */
	long webhook_retry_ms[CFG_RETRY_MAX]; /* waits after attempt 1, 2, ... */
	int webhook_retry_count;
	bool webhook_allow_private;
	bool rate_limit_enabled;
	double rate_limit_per_sec;
	int rate_limit_burst;
	char join_url_base[CFG_URL_MAX];
	int sweep_interval_ms;
	long stranded_after_ms; /* BULKREG_STRANDED_AFTER_MS, beyond the product's configuration */
	/* Limits of the API's HTTP server against hostile clients (docs/operations.md). */
	unsigned http_max_connections;
	unsigned http_max_connections_per_ip; /* 0 = no per-address limit */
	unsigned http_header_timeout_ms;
	unsigned http_body_timeout_ms;
	unsigned http_idle_timeout_ms;
	size_t http_body_budget_bytes;
	enum cfg_console console;
	enum cfg_log_format log_format;
	enum cfg_log_level log_level;
};

/* Returns the value of name, or NULL when unset. */
typedef const char *(*cfg_lookup_fn)(void *ctx, const char *name);

/*
 * Fills cfg from the process environment. On BR_CONFIG, err holds a line
 * such as "BULKREG_API_PORT: expected an integer from 1 to 65535, got \"x\"".
 */
br_status cfg_load(struct br_config *cfg, char *err, size_t errlen) BR_MUST_USE;

/* As cfg_load, with values from lookup (tests and the fuzzer use this). */
br_status cfg_load_with(struct br_config *cfg, cfg_lookup_fn lookup, void *ctx, char *err,
                        size_t errlen) BR_MUST_USE;

/*
 * Parses a duration list such as "5s,5m,30m,2h" (units ms, s, m, h, d) into
 * out_ms; *count receives the number of entries. BR_INVAL on bad syntax.
 */
br_status cfg_parse_durations(const char *s, long *out_ms, int max, int *count) BR_MUST_USE;

/* "debug" ... "error" for a level. */
const char *cfg_log_level_name(enum cfg_log_level level);

#endif
