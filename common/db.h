/*
 * db.h - a PostgreSQL connection that knows how to come back.
 *
 * A db_conn wraps one libpq connection with a connect timeout, server-side
 * bounds on every wait (statement_timeout, lock_timeout,
 * idle_in_transaction_session_timeout: struct db_opts), TCP keepalives,
 * and lazily prepared named statements:
 * a db_stmt is prepared on a connection the first time it runs there, and
 * again after a reconnect. Failures are classified so callers can decide:
 * BR_DB_CONN (the connection is gone, or reached a server that refuses
 * writes (25006, a standby): reconnect and retry the transaction),
 * BR_DB_RETRY (serialization failure, deadlock or lock_timeout: retry the
 * transaction), BR_DB (anything else; db_sqlstate() tells which, and
 * db_failed_busy() whether it was a wait cut short).
 *
 * A connection that died while idle (a PostgreSQL restart closes every
 * session) is noticed without a round trip before it is used, and a
 * stateless connection runs a statement once more on a fresh connection
 * when the failed attempt cannot have run it (see db_run).
 *
 * A db_conn is used by one thread at a time; distinct db_conns are
 * independent. A db_pool hands connections to request threads.
 */
#ifndef BULKREG_DB_H
#define BULKREG_DB_H

#include <stdbool.h>

#include <libpq-fe.h>

#include "status.h"

#define DB_MAX_PARAMS 64

typedef struct db_conn db_conn;
typedef struct db_pool db_pool;

/* A named, parameterised statement; define them static const near their use. */
typedef struct {
	const char *name; /* unique across the program */
	const char *sql;
	int nparams;
} db_stmt;

/*
 * Server-side bounds of a connection's session, passed as the libpq
 * `options` connection parameter (no round trip per connection or
 * request), before whatever options DATABASE_URL itself gives, which
 * therefore win. A 0 leaves the server's setting.
 */
struct db_opts {
	int statement_timeout_ms;
	int lock_timeout_ms;       /* a lock wait longer than this fails with 55P03 */
	int idle_in_tx_timeout_ms; /* a session idle this long inside a transaction is ended */
	int connect_timeout_s;     /* 0: DB_CONNECT_TIMEOUT_S; libpq's minimum is 2 */
	/*
	 * BULKREG_JOIN_URL_BASE as the session's bulkreg.join_url_base, for the
	 * person resources SQL builds on its own (person.updated events); NULL
	 * leaves it unset. Borrowed for the life of the connection.
	 */
	const char *join_url_base;
	/*
	 * The connection keeps no session state between statements (no
	 * session locks, LISTEN, temporary tables): db_run may replace it by a
	 * new one and run a statement again (pooled connections always are).
	 */
	bool stateless;
};

#define DB_CONNECT_TIMEOUT_S 5

/*
 * Opens a connection to url (a libpq URI) bounded by *opts (copied). On
 * failure *out is untouched and BR_DB_CONN (or BR_NOMEM) is returned; the
 * handle is still returned when lazy is true, to be connected by db_ensure.
 */
br_status db_open(const char *url, const struct db_opts *opts, bool lazy,
                  db_conn **out) BR_MUST_USE;

/* Closes and frees; accepts NULL. */
void db_close(db_conn *c);

/*
 * Reconnects if the connection is bad, closed, or was closed by the server
 * while idle (checked without a round trip): BR_OK or BR_DB_CONN.
 */
br_status db_ensure(db_conn *c) BR_MUST_USE;

/* Drops the connection so the next db_ensure reconnects. */
void db_reset(db_conn *c);

/* The libpq handle, borrowed; NULL when not connected. */
PGconn *db_pg(db_conn *c);

/*
 * Runs stmt with params (text format; NULL elements are SQL NULLs). On
 * success *res, if res is non-NULL, receives the result (free it with
 * PQclear); on failure nothing is stored and the result is classified as
 * described above. On a stateless connection outside a transaction, a
 * statement whose connection turned out dead is run once more on a new
 * connection when the first attempt cannot have had an effect.
 */
br_status db_run(db_conn *c, const db_stmt *stmt, const char *const *params,
                 PGresult **res) BR_MUST_USE;

/*
 * db_run for a statement that changes nothing (a plain SELECT): running it
 * twice is harmless, so after a lost connection it is run again even when
 * the first attempt's outcome is unknown.
 */
br_status db_run_read(db_conn *c, const db_stmt *stmt, const char *const *params,
                      PGresult **res) BR_MUST_USE;

/* Runs a parameterless command such as "BEGIN" or "COMMIT". */
br_status db_cmd(db_conn *c, const char *sql) BR_MUST_USE;

/*
 * Opens a transaction. On a stateless connection that turns out dead, it
 * reconnects and begins once more (nothing can have run): a pooled
 * connection broken during an outage costs its request nothing.
 */
br_status db_begin(db_conn *c) BR_MUST_USE;

/* Rolls back a transaction if one is open; ignores errors. */
void db_rollback(db_conn *c);

/* The SQLSTATE of the last failure ("" if none); borrowed. */
const char *db_sqlstate(const db_conn *c);

/* The server's message of the last failure ("" if none); borrowed. */
const char *db_errmsg(const db_conn *c);

/*
 * True when the last failure was a wait cut short by a bound: lock_timeout
 * (55P03) or statement_timeout / cancel (57014). Busy, not broken: the
 * same request may succeed a moment later.
 */
bool db_failed_busy(const db_conn *c);

/*
 * Pool of up to size connections opened on demand with *opts (copied;
 * stateless is forced). NULL on NOMEM.
 */
db_pool *db_pool_new(const char *url, const struct db_opts *opts, int size);
void db_pool_free(db_pool *p);

/*
 * Borrows a connected db_conn, waiting up to wait_ms for one to be free.
 * BR_TIMEOUT when none frees up, BR_DB_CONN when the database is
 * unreachable. Give it back with db_pool_put (broken ones are reset).
 */
br_status db_pool_get(db_pool *p, int wait_ms, db_conn **out) BR_MUST_USE;
void db_pool_put(db_pool *p, db_conn *c);

/* Text value of row/column, NULL when SQL NULL; borrowed from res. */
const char *db_val(const PGresult *res, int row, int col);

#endif
