/*
 * db.h - a PostgreSQL connection that knows how to come back.
 *
 * A db_conn wraps one libpq connection with a connect timeout, a
 * statement_timeout, TCP keepalives, and lazily prepared named statements:
 * a db_stmt is prepared on a connection the first time it runs there, and
 * again after a reconnect. Failures are classified so callers can decide:
 * BR_DB_CONN (the connection is gone: reconnect and retry the transaction),
 * BR_DB_RETRY (serialization failure or deadlock: retry the transaction),
 * BR_DB (anything else; db_sqlstate() tells which).
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
 * Opens a connection to url (a libpq URI). The connection attempt is given
 * connect_timeout_s seconds; every statement statement_timeout_ms. On
 * failure *out is untouched and BR_DB_CONN (or BR_NOMEM) is returned; the
 * handle is still returned when lazy is true, to be connected by db_ensure.
 */
br_status db_open(const char *url, int statement_timeout_ms, bool lazy, db_conn **out) BR_MUST_USE;

/* Closes and frees; accepts NULL. */
void db_close(db_conn *c);

/* Reconnects if the connection is bad or closed: BR_OK or BR_DB_CONN. */
br_status db_ensure(db_conn *c) BR_MUST_USE;

/* Drops the connection so the next db_ensure reconnects. */
void db_reset(db_conn *c);

/* The libpq handle, borrowed; NULL when not connected. */
PGconn *db_pg(db_conn *c);

/*
 * Runs stmt with params (text format; NULL elements are SQL NULLs). On
 * success *res, if res is non-NULL, receives the result (free it with
 * PQclear); on failure nothing is stored and the result is classified as
 * described above.
 */
br_status db_run(db_conn *c, const db_stmt *stmt, const char *const *params,
                 PGresult **res) BR_MUST_USE;

/* Runs a parameterless command such as "BEGIN" or "COMMIT". */
br_status db_cmd(db_conn *c, const char *sql) BR_MUST_USE;

/* Rolls back a transaction if one is open; ignores errors. */
void db_rollback(db_conn *c);

/* The SQLSTATE of the last failure ("" if none); borrowed. */
const char *db_sqlstate(const db_conn *c);

/* The server's message of the last failure ("" if none); borrowed. */
const char *db_errmsg(const db_conn *c);

/* Pool of up to size connections opened on demand. NULL on NOMEM. */
db_pool *db_pool_new(const char *url, int statement_timeout_ms, int size);
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
