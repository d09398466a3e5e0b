/*
 * test_config.c - README.md, Configuration: every variable's default, a good non-default
 * value, bad values (BR_CONFIG with a one-line message that starts with the
 * variable's name), empty values, the rate limit forms and the retry
 * schedule syntax.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "config.h"
#include "mq.h"

/* A small environment: NULL-terminated pairs. */
struct kv {
	const char *name;
	const char *value;
};

static const char *lookup(void *ctx, const char *name)
{
	for (const struct kv *e = ctx; e && e->name; e++) {
		if (strcmp(e->name, name) == 0)
			return e->value;
	}
	return NULL;
}

static br_status load(const struct kv *env, struct br_config *cfg, char *err, size_t errlen)
{
	return cfg_load_with(cfg, lookup, (void *)(uintptr_t)env, err, errlen);
}

static const char *const all_vars[] = {
    "DATABASE_URL",
    "AMQP_URL",
    "BULKREG_API_BIND",
    "BULKREG_API_PORT",
    "BULKREG_MAX_TASKS",
    "BULKREG_MAX_BODY_BYTES",
    "BULKREG_WORKER_CONCURRENCY",
    "BULKREG_WORKER_PREFETCH",
    "BULKREG_WORKER_METRICS_PORT",
    "BULKREG_WEBHOOK_TIMEOUT_MS",
    "BULKREG_WEBHOOK_MAX_ENDPOINTS",
    "BULKREG_WEBHOOK_RETRY_SCHEDULE",
    "BULKREG_WEBHOOK_ALLOW_PRIVATE",
    "BULKREG_RATE_LIMIT",
    "BULKREG_JOIN_URL_BASE",
    "BULKREG_SWEEP_INTERVAL_MS",
    "BULKREG_HTTP_MAX_CONNECTIONS",
    "BULKREG_HTTP_MAX_CONNECTIONS_PER_IP",
    "BULKREG_HTTP_HEADER_TIMEOUT_MS",
    "BULKREG_HTTP_BODY_TIMEOUT_MS",
    "BULKREG_HTTP_IDLE_TIMEOUT_MS",
    "BULKREG_HTTP_BODY_BUDGET_BYTES",
    "BULKREG_CONSOLE",
    "BULKREG_MQ_MANAGEMENT_URL",
    "BULKREG_LOG_FORMAT",
    "BULKREG_LOG_LEVEL",
};
#define NVARS (sizeof(all_vars) / sizeof(all_vars[0]))

static void assert_defaults(const struct br_config *c)
{
	cr_assert_str_eq(c->database_url, "postgresql://bulkreg@127.0.0.1:5432/bulkreg");
	cr_assert_str_eq(c->amqp_url, "amqp://guest:guest@127.0.0.1:5672/");
	cr_assert_str_eq(c->mq_management_url, "");
	cr_assert_str_eq(c->api_bind, "127.0.0.1");
	cr_assert_eq(c->api_port, 8080);
	cr_assert_eq(c->max_tasks, 50);
	cr_assert_eq(c->max_body_bytes, 1048576);
	cr_assert_eq(c->worker_concurrency, 4);
	cr_assert_eq(c->worker_prefetch, 16);
	cr_assert_eq(c->worker_metrics_port, 9101);
	cr_assert_eq(c->webhook_timeout_ms, 15000); /* Standard Webhooks: 15-30 s */
	cr_assert_eq(c->webhook_max_endpoints, 20);
	static const long schedule[] = {5000,     300000,   1800000, 7200000,
	                                18000000, 36000000, 36000000};
	cr_assert_eq(c->webhook_retry_count, 7);
	for (int i = 0; i < 7; i++)
		cr_assert_eq(c->webhook_retry_ms[i], schedule[i], "retry %d: %ld", i,
		             c->webhook_retry_ms[i]);
	cr_assert_not(c->webhook_allow_private);
	cr_assert(c->rate_limit_enabled);
	cr_assert_float_eq(c->rate_limit_per_sec, 50.0, 1e-9);
	cr_assert_eq(c->rate_limit_burst, 100);
	cr_assert_str_eq(c->join_url_base, "https://join.example.com/s/");
	cr_assert_eq(c->sweep_interval_ms, 5000);
	cr_assert_eq(c->http_max_connections, 1024);
	cr_assert_eq(c->http_max_connections_per_ip, 128);
	cr_assert_eq(c->http_header_timeout_ms, 20000);
	cr_assert_eq(c->http_body_timeout_ms, 60000);
	cr_assert_eq(c->http_idle_timeout_ms, 15000);
	cr_assert_eq(c->http_body_budget_bytes, (size_t)64 << 20);
	cr_assert_eq(c->console, CFG_CONSOLE_AUTO);
	cr_assert_eq(c->log_format, CFG_LOG_JSON);
	cr_assert_eq(c->log_level, CFG_LOG_INFO);
}

Test(config, defaults_when_unset)
{
	struct br_config c;
	char err[256] = "";
	struct kv none[] = {{NULL, NULL}};
	cr_assert_eq(load(none, &c, err, sizeof(err)), BR_OK, "%s", err);
	assert_defaults(&c);
}

Test(config, defaults_without_a_lookup)
{
	struct br_config c;
	char err[256] = "";
	cr_assert_eq(cfg_load_with(&c, NULL, NULL, err, sizeof(err)), BR_OK, "%s", err);
	assert_defaults(&c);
}

Test(config, empty_values_mean_the_default)
{
	struct kv env[NVARS + 1];
	for (size_t i = 0; i < NVARS; i++)
		env[i] = (struct kv){all_vars[i], ""};
	env[NVARS] = (struct kv){NULL, NULL};
	struct br_config c;
	char err[256] = "";
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_OK, "%s", err);
	assert_defaults(&c);
}

Test(config, good_non_default_values)
{
	struct kv env[] = {
	    {"DATABASE_URL", "postgres://u:p@db.internal:6543/reg?sslmode=require"},
	    {"AMQP_URL", "amqp://app:secret@mq.internal:5673/vh"},
	    {"BULKREG_API_BIND", "0.0.0.0"},
	    {"BULKREG_API_PORT", "65535"},
	    {"BULKREG_MAX_TASKS", "1000"},
	    {"BULKREG_MAX_BODY_BYTES", "2048"},
	    {"BULKREG_WORKER_CONCURRENCY", "1"},
	    {"BULKREG_WORKER_PREFETCH", "1"},
	    {"BULKREG_WORKER_METRICS_PORT", "0"},
	    {"BULKREG_WEBHOOK_TIMEOUT_MS", "250"},
	    {"BULKREG_WEBHOOK_MAX_ENDPOINTS", "1"},
	    {"BULKREG_WEBHOOK_RETRY_SCHEDULE", "100ms,1s,2m"},
	    {"BULKREG_WEBHOOK_ALLOW_PRIVATE", "1"},
	    {"BULKREG_RATE_LIMIT", "0"},
	    {"BULKREG_JOIN_URL_BASE", "http://localhost:3000/join/"},
	    {"BULKREG_SWEEP_INTERVAL_MS", "100"},
	    {"BULKREG_HTTP_MAX_CONNECTIONS", "16"},
	    {"BULKREG_HTTP_MAX_CONNECTIONS_PER_IP", "0"},
	    {"BULKREG_HTTP_HEADER_TIMEOUT_MS", "100"},
	    {"BULKREG_HTTP_BODY_TIMEOUT_MS", "3600000"},
	    {"BULKREG_HTTP_IDLE_TIMEOUT_MS", "1000"},
	    {"BULKREG_HTTP_BODY_BUDGET_BYTES", "1048576"},
	    {"BULKREG_CONSOLE", "off"},
	    {"BULKREG_LOG_FORMAT", "text"},
	    {"BULKREG_LOG_LEVEL", "debug"},
	    {NULL, NULL},
	};
	struct br_config c;
	char err[256] = "";
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_OK, "%s", err);
	cr_assert_str_eq(c.database_url, "postgres://u:p@db.internal:6543/reg?sslmode=require");
	cr_assert_str_eq(c.amqp_url, "amqp://app:secret@mq.internal:5673/vh");
	cr_assert_str_eq(c.api_bind, "0.0.0.0");
	cr_assert_eq(c.api_port, 65535);
	cr_assert_eq(c.max_tasks, 1000);
	cr_assert_eq(c.max_body_bytes, 2048);
	cr_assert_eq(c.worker_concurrency, 1);
	cr_assert_eq(c.worker_prefetch, 1);
	cr_assert_eq(c.worker_metrics_port, 0);
	cr_assert_eq(c.webhook_timeout_ms, 250);
	cr_assert_eq(c.webhook_max_endpoints, 1);
	cr_assert_eq(c.webhook_retry_count, 3);
	cr_assert_eq(c.webhook_retry_ms[0], 100);
	cr_assert_eq(c.webhook_retry_ms[1], 1000);
	cr_assert_eq(c.webhook_retry_ms[2], 120000);
	cr_assert(c.webhook_allow_private);
	cr_assert_not(c.rate_limit_enabled);
	cr_assert_str_eq(c.join_url_base, "http://localhost:3000/join/");
	cr_assert_eq(c.sweep_interval_ms, 100);
	cr_assert_eq(c.http_max_connections, 16);
	cr_assert_eq(c.http_max_connections_per_ip, 0);
	cr_assert_eq(c.http_header_timeout_ms, 100);
	cr_assert_eq(c.http_body_timeout_ms, 3600000);
	cr_assert_eq(c.http_idle_timeout_ms, 1000);
	cr_assert_eq(c.http_body_budget_bytes, 1048576);
	cr_assert_eq(c.console, CFG_CONSOLE_OFF);
	cr_assert_eq(c.log_format, CFG_LOG_TEXT);
	cr_assert_eq(c.log_level, CFG_LOG_DEBUG);
}

Test(config, other_good_values)
{
	static const struct {
		const char *name, *value;
	} cases[] = {
	    {"BULKREG_API_PORT", "1"},
	    {"BULKREG_WORKER_METRICS_PORT", "9200"},
	    {"BULKREG_WORKER_CONCURRENCY", "256"},
	    {"BULKREG_WEBHOOK_TIMEOUT_MS", "600000"},
	    {"BULKREG_LOG_LEVEL", "warn"},
	    {"BULKREG_LOG_LEVEL", "error"},
	    {"BULKREG_LOG_LEVEL", "info"},
	    {"BULKREG_LOG_FORMAT", "json"},
	    {"BULKREG_CONSOLE", "on"},
	    {"BULKREG_WEBHOOK_ALLOW_PRIVATE", "0"},
	    {"BULKREG_SWEEP_INTERVAL_MS", "3600000"},
	    {"DATABASE_URL", "postgresql:///bulkreg?host=/var/run/postgresql"},
	    /* A primary and its standby (docs/operations.md, "Running with a PostgreSQL standby").
	     */
	    {"DATABASE_URL", "postgresql://bulkreg:pw@db-1:5432,db-2:5432/bulkreg"
	                     "?target_session_attrs=read-write&connect_timeout=5"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kv env[] = {{cases[i].name, cases[i].value}, {NULL, NULL}};
		struct br_config c;
		char err[256] = "";
		cr_expect_eq(load(env, &c, err, sizeof(err)), BR_OK, "%s=%s refused: %s",
		             cases[i].name, cases[i].value, err);
	}
}

Test(config, amqp_url_lists_a_cluster)
{
	struct kv env[] = {
	    {"AMQP_URL", "amqp://u:p@mq1:5672/, amqp://u:p@mq2:5672/ ,amqp://u:p@mq3/"},
	    {"BULKREG_MQ_MANAGEMENT_URL", "http://mq1:15672,https://admin:pw@mq2:15671/"},
	    {NULL, NULL},
	};
	struct br_config c;
	char err[256] = "";
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_OK, "%s", err);
	struct mq_nodes nodes;
	cr_assert_eq(mq_nodes_parse(c.amqp_url, &nodes), BR_OK);
	cr_assert_eq(nodes.n, 3);
	cr_expect_str_eq(nodes.url[0], "amqp://u:p@mq1:5672/");
	cr_expect_str_eq(nodes.url[1], "amqp://u:p@mq2:5672/");
	cr_expect_str_eq(nodes.url[2], "amqp://u:p@mq3/");
	mq_nodes_free(&nodes);

	struct kv off[] = {{"BULKREG_MQ_MANAGEMENT_URL", "off"}, {NULL, NULL}};
	cr_assert_eq(load(off, &c, err, sizeof(err)), BR_OK, "%s", err);
	cr_assert_str_eq(c.mq_management_url, "off");
}

Test(config, rate_limit_forms)
{
	struct br_config c;
	char err[256] = "";

	struct kv off[] = {{"BULKREG_RATE_LIMIT", "0"}, {NULL, NULL}};
	cr_assert_eq(load(off, &c, err, sizeof(err)), BR_OK, "%s", err);
	cr_assert_not(c.rate_limit_enabled);

	struct kv per_sec[] = {{"BULKREG_RATE_LIMIT", "50/s,100"}, {NULL, NULL}};
	cr_assert_eq(load(per_sec, &c, err, sizeof(err)), BR_OK, "%s", err);
	cr_assert(c.rate_limit_enabled);
	cr_assert_float_eq(c.rate_limit_per_sec, 50.0, 1e-9);
	cr_assert_eq(c.rate_limit_burst, 100);

	/* Without a burst, the burst is the rate's count. */
	struct kv per_min[] = {{"BULKREG_RATE_LIMIT", "10/m"}, {NULL, NULL}};
	cr_assert_eq(load(per_min, &c, err, sizeof(err)), BR_OK, "%s", err);
	cr_assert(c.rate_limit_enabled);
	cr_assert_float_eq(c.rate_limit_per_sec, 10.0 / 60.0, 1e-9);
	cr_assert_eq(c.rate_limit_burst, 10);

	struct kv small[] = {{"BULKREG_RATE_LIMIT", "7/s"}, {NULL, NULL}};
	cr_assert_eq(load(small, &c, err, sizeof(err)), BR_OK, "%s", err);
	cr_assert_float_eq(c.rate_limit_per_sec, 7.0, 1e-9);
	cr_assert_eq(c.rate_limit_burst, 7);
}

/* Every variable with at least one bad value. */
static const struct {
	const char *name, *value;
} bad[] = {
    {"DATABASE_URL", "mysql://root@localhost/db"},
    {"DATABASE_URL", "localhost:5432"},
    {"AMQP_URL", "http://guest:guest@127.0.0.1:5672/"},
    {"AMQP_URL", "amqp://127.0.0.1:notaport/"},
    {"AMQP_URL", "amqp://a:5672/,"},
    {"AMQP_URL", "amqp://a:5672/,,amqp://b:5672/"},
    {"AMQP_URL", "amqp://a:5672/,http://b:5672/"},
    {"AMQP_URL", "amqp://a/,amqp://b/,amqp://c/,amqp://d/,amqp://e/,amqp://f/,amqp://g/,"
                 "amqp://h/,amqp://i/,amqp://j/,amqp://k/,amqp://l/,amqp://m/,amqp://n/,"
                 "amqp://o/,amqp://p/,amqp://q/"},
    {"BULKREG_MQ_MANAGEMENT_URL", "mq1:15672"},
    {"BULKREG_MQ_MANAGEMENT_URL", "http://mq1:15672,ftp://mq2"},
    {"BULKREG_MQ_MANAGEMENT_URL", "http://"},
    {"BULKREG_API_BIND",
     "an-address-that-is-far-too-long-to-be-a-host-name-or-an-ip-address-at-all.example"},
    {"BULKREG_API_BIND", "localhost"},
    {"BULKREG_API_BIND", "0.0.0.0.0"},
    {"BULKREG_API_BIND", "127.0.0.1:8080"},
    {"BULKREG_API_BIND", "[::1]"},
    {"BULKREG_API_PORT", "abc"},
    {"BULKREG_API_PORT", "0"},
    {"BULKREG_API_PORT", "65536"},
    {"BULKREG_API_PORT", "80x"},
    {"BULKREG_API_PORT", " 80"},
    {"BULKREG_API_PORT", "-1"},
    {"BULKREG_API_PORT", "99999999999999999999999"},
    {"BULKREG_MAX_TASKS", "0"},
    {"BULKREG_MAX_TASKS", "fifty"},
    {"BULKREG_MAX_BODY_BYTES", "10"},
    {"BULKREG_MAX_BODY_BYTES", "1M"},
    {"BULKREG_WORKER_CONCURRENCY", "0"},
    {"BULKREG_WORKER_CONCURRENCY", "257"},
    {"BULKREG_WORKER_PREFETCH", "0"},
    {"BULKREG_WEBHOOK_MAX_ENDPOINTS", "0"},
    {"BULKREG_WEBHOOK_MAX_ENDPOINTS", "1001"},
    {"BULKREG_WORKER_PREFETCH", "65536"},
    {"BULKREG_WORKER_METRICS_PORT", "-1"},
    {"BULKREG_WORKER_METRICS_PORT", "70000"},
    {"BULKREG_WORKER_METRICS_PORT", "off"},
    {"BULKREG_WEBHOOK_TIMEOUT_MS", "99"},
    {"BULKREG_WEBHOOK_TIMEOUT_MS", "10s"},
    {"BULKREG_WEBHOOK_RETRY_SCHEDULE", "5"},
    {"BULKREG_WEBHOOK_RETRY_SCHEDULE", "5s,"},
    {"BULKREG_WEBHOOK_RETRY_SCHEDULE", "5s;5m"},
    {"BULKREG_WEBHOOK_RETRY_SCHEDULE", "5w"},
    {"BULKREG_WEBHOOK_ALLOW_PRIVATE", "2"},
    {"BULKREG_WEBHOOK_ALLOW_PRIVATE", "yes"},
    {"BULKREG_RATE_LIMIT", "50"},
    {"BULKREG_RATE_LIMIT", "50/x"},
    {"BULKREG_RATE_LIMIT", "/s"},
    {"BULKREG_RATE_LIMIT", "0/s"},
    {"BULKREG_RATE_LIMIT", "50/s,"},
    {"BULKREG_RATE_LIMIT", "50/s,0"},
    {"BULKREG_RATE_LIMIT", "50/s,100,3"},
    {"BULKREG_RATE_LIMIT", "-5/s"},
    {"BULKREG_RATE_LIMIT", "fast"},
    {"BULKREG_JOIN_URL_BASE", "ftp://join.example.com/"},
    {"BULKREG_JOIN_URL_BASE", "join.example.com/s/"},
    {"BULKREG_SWEEP_INTERVAL_MS", "99"},
    {"BULKREG_SWEEP_INTERVAL_MS", "5s"},
    {"BULKREG_HTTP_MAX_CONNECTIONS", "15"},
    {"BULKREG_HTTP_MAX_CONNECTIONS", "many"},
    {"BULKREG_HTTP_MAX_CONNECTIONS_PER_IP", "-1"},
    {"BULKREG_HTTP_MAX_CONNECTIONS_PER_IP", "65537"},
    {"BULKREG_HTTP_HEADER_TIMEOUT_MS", "99"},
    {"BULKREG_HTTP_HEADER_TIMEOUT_MS", "20s"},
    {"BULKREG_HTTP_BODY_TIMEOUT_MS", "0"},
    {"BULKREG_HTTP_BODY_TIMEOUT_MS", "3600001"},
    {"BULKREG_HTTP_IDLE_TIMEOUT_MS", "999"},
    {"BULKREG_HTTP_BODY_BUDGET_BYTES", "1048575"},
    {"BULKREG_HTTP_BODY_BUDGET_BYTES", "64M"},
    {"BULKREG_CONSOLE", "yes"},
    {"BULKREG_LOG_FORMAT", "xml"},
    {"BULKREG_LOG_LEVEL", "verbose"},
    {"BULKREG_LOG_LEVEL", "trace"},
};

Test(config, bad_values_name_the_variable)
{
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kv env[] = {{bad[i].name, bad[i].value}, {NULL, NULL}};
		struct br_config c, before;
		memset(&c, 0xab, sizeof(c));
		memcpy(&before, &c, sizeof(c));
		char err[256] = "";
		br_status st = load(env, &c, err, sizeof(err));
		cr_expect_eq(st, BR_CONFIG, "%s=\"%s\" accepted (status %d)", bad[i].name,
		             bad[i].value, st);
		size_t n = strlen(bad[i].name);
		cr_expect(strncmp(err, bad[i].name, n) == 0 && err[n] == ':',
		          "%s=\"%s\": message does not start with the name: %s", bad[i].name,
		          bad[i].value, err);
		cr_expect_null(strchr(err, '\n'), "message is not one line: %s", err);
		cr_expect(memcmp(&c, &before, sizeof(c)) == 0,
		          "%s=\"%s\": cfg was written on failure", bad[i].name, bad[i].value);
	}
}

Test(config, every_variable_has_a_bad_value_tested)
{
	for (size_t v = 0; v < NVARS; v++) {
		bool found = false;
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]) && !found; i++)
			found = strcmp(bad[i].name, all_vars[v]) == 0;
		cr_expect(found, "no bad value tested for %s", all_vars[v]);
	}
}

Test(config, message_quotes_the_value_on_one_line)
{
	struct kv env[] = {{"BULKREG_API_PORT", "8\n080"}, {NULL, NULL}};
	struct br_config c;
	char err[256] = "";
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_CONFIG);
	cr_assert_null(strchr(err, '\n'), "%s", err);
	cr_assert(strncmp(err, "BULKREG_API_PORT:", 17) == 0, "%s", err);

	struct kv abc[] = {{"BULKREG_API_PORT", "abc"}, {NULL, NULL}};
	cr_assert_eq(load(abc, &c, err, sizeof(err)), BR_CONFIG);
	cr_assert_not_null(strstr(err, "abc"), "the value is not shown: %s", err);
}

Test(config, a_tiny_error_buffer_is_safe)
{
	struct kv env[] = {{"BULKREG_LOG_LEVEL", "loud"}, {NULL, NULL}};
	struct br_config c;
	char err[8];
	memset(err, 'x', sizeof(err));
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_CONFIG);
	cr_assert_eq(err[sizeof(err) - 1], '\0');
	cr_assert_str_eq(err, "BULKREG");
	cr_assert_eq(load(env, &c, NULL, 0), BR_CONFIG);
}

Test(config, the_first_bad_variable_is_reported)
{
	struct kv env[] = {{"BULKREG_LOG_LEVEL", "loud"}, {"BULKREG_API_PORT", "x"}, {NULL, NULL}};
	struct br_config c;
	char err[256] = "";
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_CONFIG);
	/* The README's configuration order: the port comes before the log level. */
	cr_assert(strncmp(err, "BULKREG_API_PORT:", 17) == 0, "%s", err);
}

/* ---- the duration list of BULKREG_WEBHOOK_RETRY_SCHEDULE ---- */

Test(durations, units)
{
	long ms[8];
	int n = -1;
	cr_assert_eq(cfg_parse_durations("250ms,5s,5m,2h,1d,0s", ms, 8, &n), BR_OK);
	cr_assert_eq(n, 6);
	cr_assert_eq(ms[0], 250);
	cr_assert_eq(ms[1], 5000);
	cr_assert_eq(ms[2], 300000);
	cr_assert_eq(ms[3], 7200000);
	cr_assert_eq(ms[4], 86400000);
	cr_assert_eq(ms[5], 0);
}

Test(durations, contract_default)
{
	long ms[CFG_RETRY_MAX];
	int n = -1;
	cr_assert_eq(cfg_parse_durations("5s,5m,30m,2h,5h,10h,10h", ms, CFG_RETRY_MAX, &n), BR_OK);
	cr_assert_eq(n, 7);
	cr_assert_eq(ms[2], 30L * 60 * 1000);
	cr_assert_eq(ms[6], 10L * 3600 * 1000);
}

Test(durations, empty_is_no_retries)
{
	long ms[4];
	int n = -1;
	cr_assert_eq(cfg_parse_durations("", ms, 4, &n), BR_OK);
	cr_assert_eq(n, 0);
}

Test(durations, bad_forms)
{
	static const char *const cases[] = {
	    "5",
	    "s",
	    "ms",
	    "5x",
	    "5S",
	    "5 s",
	    " 5s",
	    "5s ",
	    "5s,",
	    ",5s",
	    "5s,,5m",
	    "5s;5m",
	    "1.5s",
	    "-5s",
	    "+5s",
	    "5sec",
	    "5mss",
	    "5s5m",
	    "99999999999999999999d",
	    "106751991167301d",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long ms[8];
		int n = -7;
		cr_expect_eq(cfg_parse_durations(cases[i], ms, 8, &n), BR_INVAL, "\"%s\" accepted",
		             cases[i]);
		cr_expect_eq(n, -7, "\"%s\": count written on failure", cases[i]);
	}
}

Test(durations, too_many_entries)
{
	long ms[3];
	int n = -1;
	cr_assert_eq(cfg_parse_durations("1s,2s,3s", ms, 3, &n), BR_OK);
	cr_assert_eq(n, 3);
	cr_assert_eq(cfg_parse_durations("1s,2s,3s,4s", ms, 3, &n), BR_INVAL);

	/* The variable allows CFG_RETRY_MAX entries and no more. */
	char list[256] = "";
	size_t len = 0;
	for (int i = 0; i <= CFG_RETRY_MAX; i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s1s", i ? "," : "");
	struct kv env[] = {{"BULKREG_WEBHOOK_RETRY_SCHEDULE", list}, {NULL, NULL}};
	struct br_config c;
	char err[256] = "";
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_CONFIG, "%d entries accepted",
	             CFG_RETRY_MAX + 1);
	list[len - 3] = '\0'; /* drop the last ",1s" */
	cr_assert_eq(load(env, &c, err, sizeof(err)), BR_OK, "%s", err);
	cr_assert_eq(c.webhook_retry_count, CFG_RETRY_MAX);
}

Test(config, log_level_names)
{
	cr_assert_str_eq(cfg_log_level_name(CFG_LOG_DEBUG), "debug");
	cr_assert_str_eq(cfg_log_level_name(CFG_LOG_INFO), "info");
	cr_assert_str_eq(cfg_log_level_name(CFG_LOG_WARN), "warn");
	cr_assert_str_eq(cfg_log_level_name(CFG_LOG_ERROR), "error");
}
