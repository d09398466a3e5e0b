/*
 * test_migrate.c - migrations (README.md, Administration): every sql/NNN_name.sql is
 * applied once and recorded in schema_migrations; running again is a
 * no-op; two `bulkreg-admin migrate` at once on a fresh database both
 * succeed and apply each migration exactly once.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "migrate.h"
#include "support.h"

#define MIGRATE_TIMEOUT_MS 180000

static const char sql_snapshot[] =
    "SELECT coalesce(string_agg(version || ':' || name || ':' || applied_at, ','"
    "                           ORDER BY version), '')"
    "  FROM schema_migrations";

/* The snapshot of schema_migrations as one string (caller frees). */
static char *snapshot(PGconn *db)
{
	return t_sql_text(db, sql_snapshot, 0, NULL);
}

/* The names of the public schema's relations and functions (caller frees). */
static char *catalog(PGconn *db)
{
	return t_sql_text(
	    db,
	    "SELECT (SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname)"
	    "          FROM pg_class WHERE relnamespace = 'public'::regnamespace)"
	    "    || ' / ' ||"
	    "       (SELECT string_agg(proname, ',' ORDER BY proname)"
	    "          FROM pg_proc WHERE pronamespace = 'public'::regnamespace)",
	    0, NULL);
}

/* Every embedded migration is recorded exactly once, and nothing else is. */
static void assert_all_recorded_once(PGconn *db)
{
	long rows = t_sql_long(db, "SELECT count(*) FROM schema_migrations", 0, NULL);
	long distinct =
	    t_sql_long(db, "SELECT count(DISTINCT version) FROM schema_migrations", 0, NULL);
	cr_assert_eq(rows, (long)migrate_embedded_count, "%ld rows for %zu migrations", rows,
	             migrate_embedded_count);
	cr_assert_eq(distinct, rows, "a migration is recorded twice");
	for (size_t i = 0; i < migrate_embedded_count; i++) {
		char version[16];
		snprintf(version, sizeof(version), "%d", migrate_embedded[i].version);
		const char *params[] = {version, migrate_embedded[i].name};
		long n = t_sql_long(db,
		                    "SELECT count(*) FROM schema_migrations"
		                    " WHERE version = $1::int AND name = $2",
		                    2, params);
		cr_expect_eq(n, 1, "migration %s is recorded %ld times", migrate_embedded[i].name,
		             n);
	}
}

Test(migrate, embedded_migrations_are_ordered)
{
	cr_assert_gt(migrate_embedded_count, 0);
	for (size_t i = 1; i < migrate_embedded_count; i++)
		cr_expect_lt(migrate_embedded[i - 1].version, migrate_embedded[i].version,
		             "%s before %s", migrate_embedded[i - 1].name,
		             migrate_embedded[i].name);
}

Test(migrate, second_run_is_a_no_op)
{
	PGconn *db = t_db(); /* migrates once per process */
	assert_all_recorded_once(db);
	char *before = snapshot(db);

	char out[1024];
	const char *args[] = {"migrate", NULL};
	int rc = t_admin(out, sizeof(out), args);
	cr_assert_eq(rc, 0, "bulkreg-admin migrate exited %d: %s", rc, out);
	char *after_admin = snapshot(db);
	cr_assert_str_eq(after_admin, before, "bulkreg-admin migrate changed schema_migrations");

	cr_assert_eq(t_migrate(t_database_url()), 0, "a second run applied migrations");
	char *after = snapshot(db);
	cr_assert_str_eq(after, before, "migrate_run changed schema_migrations");
	free(before);
	free(after_admin);
	free(after);
	PQfinish(db);
}

/* "migrations applied: N" from bulkreg-admin's output in a log; -1 when absent. */
static int applied_in_log(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char line[512];
	int n = -1;
	while (fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, "migrations applied: ");
		if (p)
			n = (int)strtol(p + strlen("migrations applied: "), NULL, 10);
	}
	fclose(f);
	return n;
}

Test(migrate, url_rewriting)
{
	char out[256];
	t_url_with_database("postgresql://u@h:5432/db", "x", out, sizeof(out));
	cr_assert_str_eq(out, "postgresql://u@h:5432/x");
	t_url_with_database("postgresql://u@h:5432/db?sslmode=disable", "x", out, sizeof(out));
	cr_assert_str_eq(out, "postgresql://u@h:5432/x?sslmode=disable");
	t_url_with_database("postgresql://u@h:5432", "x", out, sizeof(out));
	cr_assert_str_eq(out, "postgresql://u@h:5432/x");
}

Test(migrate, concurrent_runs_are_safe, .fini = t_scratch_drop_all, .timeout = 600)
{
	char scratch_url[1024], reference_url[1024];
	t_scratch_create(scratch_url, sizeof(scratch_url));
	t_scratch_create(reference_url, sizeof(reference_url));
	char env_url[1100];
	snprintf(env_url, sizeof(env_url), "DATABASE_URL=%s", scratch_url);
	const char *env[] = {env_url, NULL};
	const char *args[] = {"migrate", NULL};

	/* Both start before either is waited for. */
	struct t_proc p[2];
	for (int i = 0; i < 2; i++)
		t_proc_spawn(&p[i], "bulkreg-admin", args, env);
	int applied_total = 0;
	for (int i = 0; i < 2; i++) {
		int rc = t_proc_stop(&p[i], 0, MIGRATE_TIMEOUT_MS);
		if (rc != 0)
			t_proc_print_log(&p[i], 40);
		cr_assert_eq(rc, 0, "migrate #%d exited %d (log %s)", i + 1, rc, p[i].log_path);
		int n = applied_in_log(p[i].log_path);
		cr_expect_geq(n, 0, "no \"migrations applied\" line in %s", p[i].log_path);
		applied_total += n;
	}
	cr_expect_eq(applied_total, (int)migrate_embedded_count,
	             "the two runs applied %d migrations together, not %zu", applied_total,
	             migrate_embedded_count);

	PGconn *db = PQconnectdb(scratch_url);
	cr_assert_eq(PQstatus(db), CONNECTION_OK, "cannot connect to %s", scratch_url);
	assert_all_recorded_once(db);
	char *before = snapshot(db);
	/* The schema is whole: the same relations and functions as a plain run gives. */
	cr_assert_eq(t_migrate(reference_url), (int)migrate_embedded_count);
	PGconn *ref = PQconnectdb(reference_url);
	cr_assert_eq(PQstatus(ref), CONNECTION_OK, "cannot connect to %s", reference_url);
	char *want = catalog(ref), *got = catalog(db);
	cr_expect_str_eq(got, want, "the concurrently migrated schema differs from a plain run's");
	free(want);
	free(got);
	PQfinish(ref);

	/* And a third run on it applies nothing. */
	cr_assert_eq(t_migrate(scratch_url), 0);
	char *after = snapshot(db);
	cr_assert_str_eq(after, before);
	free(before);
	free(after);
	PQfinish(db);
}

/*
 * sql/013_email_unicode.sql on a database that already holds addresses
 * which become one under Unicode case folding: nobody is merged or
 * removed; the later person of each pair is marked with the earlier one,
 * and the earlier one keeps the address for duplicate checks.
 */
Test(migrate, unicode_folding_marks_existing_duplicates, .fini = t_scratch_drop_all)
{
	char url[1024];
	t_scratch_create(url, sizeof(url));
	size_t before = 0;
	while (before < migrate_embedded_count && migrate_embedded[before].version < 13)
		before++;
	cr_assert_lt(before, migrate_embedded_count, "no migration 013");
	db_conn *c = NULL;
	const struct db_opts opts = {.statement_timeout_ms = 60000};
	cr_assert_eq(db_open(url, &opts, false, &c), BR_OK);
	int applied = 0;
	cr_assert_eq(migrate_run(c, migrate_embedded, before, &applied), BR_OK);

	PGconn *db = PQconnectdb(url);
	cr_assert_eq(PQstatus(db), CONNECTION_OK, "cannot connect to %s", url);
	char sid[37];
	char *org = t_sql_text(db, "INSERT INTO organizations (name) VALUES ('fold') RETURNING id",
	                       0, NULL);
	t_session_sql(db, org, "fold", sid);
	const char *p[] = {sid};
	PQclear(t_sql(db,
	              "INSERT INTO people (session_id, position, email, registration_status,"
	              " join_token)"
	              " SELECT $1, n - 1, e, 'registered', 'token-of-this-person-' || n"
	              " FROM unnest(ARRAY['ÉMILE@x.org', 'other@x.org', 'émile@x.org',"
	              "                   'e\xcc\x81mile@x.org']) WITH ORDINALITY AS x(e, n)",
	              1, p));
	cr_assert_eq(migrate_run(c, migrate_embedded, migrate_embedded_count, &applied), BR_OK);
	cr_assert_eq(applied, (int)(migrate_embedded_count - before));

	char *marks = t_sql_text(db,
	                         "SELECT string_agg(p.position || ':' ||"
	                         "  coalesce((SELECT q.position FROM people q"
	                         "            WHERE q.id = p.email_conflict_of)::text, '-'),"
	                         "  ' ' ORDER BY p.position)"
	                         " FROM people p WHERE p.session_id = $1",
	                         1, p);
	cr_expect_str_eq(marks, "0:- 1:- 2:0 3:0");
	free(marks);
	/* The address is still taken, by the earliest person. */
	char *dup = t_sql_text(db,
	                       "SELECT r.outcome || ':' || r.error_code FROM register_person($1,"
	                       " '{\"email\":\"E\xcc\x81MILE@X.ORG\"}', false, false, NULL) r",
	                       1, p);
	cr_expect_str_eq(dup, "failed:already_registered");
	free(dup);
	free(org);
	PQfinish(db);
	db_close(c);
}
