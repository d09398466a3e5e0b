/*
 * migrate.h - applies the schema migrations compiled in from sql/.
 *
 * Each sql/NNN_name.sql runs once, in order, in its own transaction, and is
 * recorded in schema_migrations. A session-level advisory lock serialises
 * concurrent runs, so two processes migrating at once is safe: the second
 * waits, then finds nothing pending.
 */
#ifndef BULKREG_MIGRATE_H
#define BULKREG_MIGRATE_H

#include <stddef.h>

#include "db.h"
#include "status.h"

struct migration {
	int version;
	const char *name;
	const char *sql;
};

/* Generated at build time by cmake/embed_sql.cmake. */
extern const struct migration migrate_embedded[];
extern const size_t migrate_embedded_count;

/*
 * Applies every pending migration of list[0..n) on c. *applied, if
 * non-NULL, receives how many ran. On failure the failing migration is
 * rolled back whole (earlier ones stay) and its error is logged.
 */
br_status migrate_run(db_conn *c, const struct migration *list, size_t n, int *applied) BR_MUST_USE;

#endif
