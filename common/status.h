/*
 * status.h - the one status type every fallible bulkreg function returns.
 *
 * The codes are generated from BR_STATUS_MAP so the enum, the names and the
 * messages can never drift apart (the pattern of libuv's UV_ERRNO_MAP).
 */
#ifndef BULKREG_STATUS_H
#define BULKREG_STATUS_H

#define BR_MUST_USE __attribute__((warn_unused_result))

/* X(name, message) */
#define BR_STATUS_MAP(X)                                            \
	X(OK, "success")                                            \
	X(NOMEM, "out of memory")                                   \
	X(INVAL, "invalid argument")                                \
	X(TOOBIG, "value exceeds its size limit")                   \
	X(CONFIG, "invalid configuration")                          \
	X(NOTFOUND, "not found")                                    \
	X(CONFLICT, "conflicts with the current state")             \
	X(TIMEOUT, "timed out")                                     \
	X(IO, "input/output error")                                 \
	X(DB, "database error")                                     \
	X(DB_CONN, "database connection lost or unavailable")       \
	X(DB_RETRY, "database transaction must be retried")         \
	X(MQ, "message broker error")                               \
	X(MQ_CONN, "message broker connection lost or unavailable") \
	X(MQ_NACK, "message broker refused a publish")              \
	X(MQ_BLOCKED, "message broker blocks publishing (alarm)")   \
	X(HTTP, "HTTP error")                                       \
	X(CRYPTO, "cryptographic operation failed")                 \
	X(STOPPED, "shutting down")

typedef enum {
#define BR_STATUS_ENUM(name, msg) BR_##name,
	BR_STATUS_MAP(BR_STATUS_ENUM)
#undef BR_STATUS_ENUM
	BR_STATUS_COUNT_
} br_status;

/* A static, human-readable message; "unknown status" for out-of-range. */
const char *br_strerror(br_status st);

/* The code's name without prefix ("DB_CONN"); "UNKNOWN" for out-of-range. */
const char *br_status_name(br_status st);

#endif
