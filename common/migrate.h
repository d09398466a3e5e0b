/*
 * migrate.h - applies the SQL compiled in from sql/: the schema migrations,
 * then the function files (docs/architecture.md, "SQL layout").
 *
 * Each sql/migrations/NNN_name.sql runs once, in version order, in its own
 * transaction, and is recorded in schema_migrations with the SHA-256 of its
 * text. A recorded migration whose text has changed since is refused: the
 * run applies nothing and fails, naming the file. Then each
 * sql/functions/NAME.sql (CREATE OR REPLACE only) is applied, in name order,
 * each in its own transaction, when it is new or its SHA-256 differs from
 * the one recorded in schema_functions. A run with nothing new changes
 * nothing. A session-level advisory lock serialises concurrent runs, so two
 * processes migrating at once is safe: the second waits, then finds
 * nothing to do.
 *
 * A database migrated by the first development cycle's migrations 001 to
 * 011 (tests/integration/legacy_sql/; the baseline
 * sql/migrations/001_baseline.sql reproduces their schema) is recognised by
 * its schema_migrations rows and recorded as having the baseline, without
 * running it; the migrations after the baseline and the function files are
 * then applied like on any database.
 */
#ifndef BULKREG_MIGRATE_H
#define BULKREG_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "status.h"

/* One embedded file: a schema migration (version > 0) or a function file (version 0). */
struct migration {
	int version;
	const char *name; /* file name without directory and .sql */
	const char *sql;
};

/* What one run applies. The arrays are borrowed. */
struct migrate_set {
	const struct migration *schema; /* increasing versions; schema[0] is the baseline */
	size_t n_schema;
	const struct migration *functions; /* in the order they are applied */
	size_t n_functions;
};

/* What one run did. */
struct migrate_counts {
	int schema;    /* schema migrations run */
	int functions; /* function files applied (new or changed) */
	bool adopted;  /* a first-cycle database was recorded as having the baseline */
};

/* Generated at build time by cmake/embed_sql.cmake. */
extern const struct migration migrate_embedded[]; /* sql/migrations/ */
extern const size_t migrate_embedded_count;
extern const struct migration migrate_functions[]; /* sql/functions/ */
extern const size_t migrate_functions_count;
extern const struct migrate_set migrate_embedded_set;

/*
 * The first development cycle's migrations (001_schema ...
 * 011_events_for_subscribers): a database that recorded exactly these is
 * adopted as having the baseline. The fixtures under
 * tests/integration/legacy_sql/ bear the same names.
 */
extern const char *const migrate_legacy_names[];
extern const size_t migrate_legacy_count;

/*
 * Brings the database of c up to set. *counts, if non-NULL, receives what
 * ran. On failure nothing more is applied: a migration or function file
 * that fails is rolled back whole (earlier ones stay); a changed applied
 * migration, or a migration history this build does not know, is refused
 * (BR_CONFLICT) before anything is applied. Either way a message naming the
 * file goes to err (errlen bytes, NUL-terminated; may be NULL) and the log.
 */
br_status migrate_run(db_conn *c, const struct migrate_set *set, struct migrate_counts *counts,
                      char *err, size_t errlen) BR_MUST_USE;

/* The lowercase hex SHA-256 of sql (65 bytes with the NUL), as recorded. */
void migrate_checksum(const char *sql, char out[65]);

#endif
