/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 * Each line carries ts, level, msg and whichever context ids the calling
 * thread has set (request_id, job_id, task_id). The level is tested before
 * anything is formatted, so a disabled debug line costs one comparison.
 *
 * Thread-safe: each line is written with a single write(2), and the context
 * ids are thread-local.
 */
#ifndef BULKREG_LOG_H
#define BULKREG_LOG_H

#include "config.h"

/* Sets format and threshold; call once before threads start. */
void log_init(enum cfg_log_format format, enum cfg_log_level level);

/* True when a line at level would be written. */
int log_enabled(enum cfg_log_level level);

/* Formats and writes one line; use the LOG_* macros instead. */
void log_write(enum cfg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Writes one line at level with msg and, after the context ids, the fields
 * (name, value, name, value, ..., NULL; a NULL value leaves its field out):
 * for a record whose parts a reader filters on, such as the console's
 * audit line (docs/console.md). Nothing is written below the threshold.
 */
void log_fields(enum cfg_log_level level, const char *msg, const char *const *fields);

/*
 * The calling thread's context ids; NULL or "" clears one. The strings are
 * copied (up to 63 bytes each).
 */
void log_set_request_id(const char *id);
void log_set_job_id(const char *id);
void log_set_task_id(const char *id);
void log_clear_context(void);

#define LOG_AT(level, ...)                             \
	do {                                           \
		if (log_enabled(level))                \
			log_write(level, __VA_ARGS__); \
	} while (0)
#define LOG_DEBUG(...) LOG_AT(CFG_LOG_DEBUG, __VA_ARGS__)
#define LOG_INFO(...)  LOG_AT(CFG_LOG_INFO, __VA_ARGS__)
#define LOG_WARN(...)  LOG_AT(CFG_LOG_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG_AT(CFG_LOG_ERROR, __VA_ARGS__)

#endif
