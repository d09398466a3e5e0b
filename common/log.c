/*
 * log.c - JSON-lines logger (see log.h). Global state: the format and level,
 * set once by log_init before other threads exist; per-thread context ids.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "strbuf.h"

#define LOG_LINE_MAX 8192
#define LOG_ID_MAX   64

static enum cfg_log_format log_format = CFG_LOG_JSON;
static enum cfg_log_level log_level = CFG_LOG_INFO;

static _Thread_local char ctx_request[LOG_ID_MAX];
static _Thread_local char ctx_job[LOG_ID_MAX];
static _Thread_local char ctx_task[LOG_ID_MAX];

void log_init(enum cfg_log_format format, enum cfg_log_level level)
{
	log_format = format;
	log_level = level;
}

int log_enabled(enum cfg_log_level level)
{
	return level >= log_level;
}

static void set_id(char *dst, const char *id)
{
	if (!id) {
		dst[0] = '\0';
		return;
	}
	size_t n = strnlen(id, LOG_ID_MAX - 1);
	memcpy(dst, id, n);
	dst[n] = '\0';
}

void log_set_request_id(const char *id)
{
	set_id(ctx_request, id);
}

void log_set_job_id(const char *id)
{
	set_id(ctx_job, id);
}

void log_set_task_id(const char *id)
{
	set_id(ctx_task, id);
}

void log_clear_context(void)
{
	ctx_request[0] = ctx_job[0] = ctx_task[0] = '\0';
}

static br_status append_field(strbuf *sb, const char *key, const char *val)
{
	if (!val[0])
		return BR_OK;
	if (log_format == CFG_LOG_TEXT)
		return sb_appendf(sb, " %s=%s", key, val);
	br_status st = sb_appendf(sb, ",\"%s\":\"", key);
	if (st == BR_OK)
		st = sb_append_json_escaped(sb, val, strlen(val));
	if (st == BR_OK)
		st = sb_appends(sb, "\"");
	return st;
}

/* Builds and writes one line: msg, the context ids, then fields (log_fields). */
static void emit(enum cfg_log_level level, const char *msg, const char *const *fields)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	char when[64];
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(ts.tv_nsec / 1000000) % 1000);
	const char *lvl = cfg_log_level_name(level);

	strbuf sb;
	sb_init(&sb, LOG_LINE_MAX);
	br_status st;
	if (log_format == CFG_LOG_TEXT) {
		st = sb_appendf(&sb, "%s %-5s %s", when, lvl, msg);
	} else {
		st = sb_appendf(&sb, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", when, lvl);
		if (st == BR_OK)
			st = sb_append_json_escaped(&sb, msg, strlen(msg));
		if (st == BR_OK)
			st = sb_appends(&sb, "\"");
	}
	if (st == BR_OK)
		st = append_field(&sb, "request_id", ctx_request);
	if (st == BR_OK)
		st = append_field(&sb, "job_id", ctx_job);
	if (st == BR_OK)
		st = append_field(&sb, "task_id", ctx_task);
	for (size_t i = 0; fields && fields[i] && st == BR_OK; i += 2) {
		if (fields[i + 1])
			st = append_field(&sb, fields[i], fields[i + 1]);
	}
	if (st == BR_OK)
		st = sb_appends(&sb, log_format == CFG_LOG_TEXT ? "\n" : "}\n");
	if (st != BR_OK) {
		static const char oom[] = "{\"level\":\"error\",\"msg\":\"log line lost\"}\n";
		ssize_t w = write(STDERR_FILENO, oom, sizeof(oom) - 1);
		(void)w;
		sb_free(&sb);
		return;
	}
	ssize_t w = write(STDERR_FILENO, sb_str(&sb), sb.len);
	(void)w;
	sb_free(&sb);
}

void log_write(enum cfg_log_level level, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX / 2];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit(level, msg, NULL);
}

void log_fields(enum cfg_log_level level, const char *msg, const char *const *fields)
{
	if (log_enabled(level))
		emit(level, msg, fields);
}
