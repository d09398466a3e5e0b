/*
 * test_migrate.c - bulkreg-admin migrate (common/migrate.h;
 * docs/architecture.md, "SQL layout"): every sql/migrations/NNN_name.sql is
 * applied once and recorded with its checksum, every sql/functions/ file is
 * applied when new or changed; running again is a no-op; two runs at once
 * on a fresh database both succeed and apply everything exactly once; an
 * applied migration that changed is refused; a database built by the first
 * cycle's release, migrations 001..011 (tests/integration/legacy_sql/), is
 * recognised, brought forward by the migrations after the baseline, and
 * ends with the same catalog as a fresh one.
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
    "SELECT coalesce((SELECT string_agg(version || ':' || name || ':' || applied_at || ':'"
    "                                   || coalesce(checksum, '-'), ',' ORDER BY version)"
    "                   FROM schema_migrations), '')"
    "    || ' / ' ||"
    "       coalesce((SELECT string_agg(name || ':' || applied_at || ':' || checksum, ','"
    "                                   ORDER BY name)"
    "                   FROM schema_functions), '')";

/* What migrate records, schema_migrations and schema_functions, as one string (caller frees). */
static char *snapshot(PGconn *db)
{
	return t_sql_text(db, sql_snapshot, 0, NULL);
}

/*
 * The public schema, one sorted line per item: relations with their
 * options, columns in order with type, NOT NULL and default, constraints,
 * indexes, triggers, and functions with their whole definition (newlines
 * written as \n).
 */
static const char sql_catalog[] =
    "SELECT coalesce(string_agg(x, E'\\n' ORDER BY x), '') FROM ("
    " SELECT format('rel %s %s %s', c.relname, c.relkind,"
    "               coalesce(array_to_string(c.reloptions, ','), ''))"
    "   FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
    " UNION ALL"
    " SELECT format('col %s %s %s %s%s%s%s', c.relname,"
    "               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,"
    "               format_type(a.atttypid, a.atttypmod),"
    "               CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,"
    "               coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''),"
    "               CASE WHEN a.attgenerated <> '' THEN ' generated' ELSE '' END)"
    "   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    "   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
    "  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
    "    AND a.attnum > 0 AND NOT a.attisdropped"
    " UNION ALL"
    " SELECT format('con %s %s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))"
    "   FROM pg_constraint c WHERE c.connamespace = 'public'::regnamespace"
    " UNION ALL"
    " SELECT format('idx %s %s', i.indrelid::regclass, pg_get_indexdef(i.indexrelid))"
    "   FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    "  WHERE c.relnamespace = 'public'::regnamespace"
    " UNION ALL"
    " SELECT format('trg %s %s', t.tgrelid::regclass, pg_get_triggerdef(t.oid))"
    "   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
    "  WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal"
    " UNION ALL"
    " SELECT format('fn %s(%s) %s', p.proname, pg_get_function_identity_arguments(p.oid),"
    "               replace(pg_get_functiondef(p.oid), E'\\n', '\\n'))"
    "   FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
    ") s(x)";

/* The catalog of db (see sql_catalog) as one string (caller frees). */
static char *catalog(PGconn *db)
{
	return t_sql_text(db, sql_catalog, 0, NULL);
}

/*
 * Expects two catalogs equal, reporting the first line that differs: its
 * start (what the item is) and its text from a little before the first
 * differing character.
 */
static void expect_same_catalog(const char *got, const char *want, const char *what)
{
	if (!strcmp(got, want))
		return;
	size_t i = 0, col = 0;
	while (got[i] && got[i] == want[i])
		i++;
	while (col < i && got[i - col - 1] != '\n')
		col++;
	const char *g = got + i - col, *w = want + i - col;
	size_t from = col > 100 ? col - 60 : 0;
	int head = (int)strcspn(g, "\n");
	int gl = (int)strcspn(g + from, "\n"), wl = (int)strcspn(w + from, "\n");
	cr_expect_fail("%s: first difference, at character %zu of\n  %.*s\n  got:  %s%.*s\n"
	               "  want: %s%.*s",
	               what, col, head > 60 ? 60 : head, g, from ? "..." : "", gl > 200 ? 200 : gl,
	               g + from, from ? "..." : "", wl > 200 ? 200 : wl, w + from);
}

/* Every embedded migration and function file is recorded once, with its checksum. */
static void assert_all_recorded_once(PGconn *db)
{
	long rows = t_sql_long(db, "SELECT count(*) FROM schema_migrations", 0, NULL);
	cr_assert_eq(rows, (long)migrate_embedded_count, "%ld rows for %zu migrations", rows,
	             migrate_embedded_count);
	for (size_t i = 0; i < migrate_embedded_count; i++) {
		char version[16], sum[65];
		snprintf(version, sizeof(version), "%d", migrate_embedded[i].version);
		migrate_checksum(migrate_embedded[i].sql, sum);
		const char *params[] = {version, migrate_embedded[i].name, sum};
		long n = t_sql_long(db,
		                    "SELECT count(*) FROM schema_migrations"
		                    " WHERE version = $1::int AND name = $2 AND checksum = $3",
		                    3, params);
		cr_expect_eq(n, 1, "migration %s is recorded %ld times", migrate_embedded[i].name,
		             n);
	}
	rows = t_sql_long(db, "SELECT count(*) FROM schema_functions", 0, NULL);
	cr_assert_eq(rows, (long)migrate_functions_count, "%ld rows for %zu function files", rows,
	             migrate_functions_count);
	for (size_t i = 0; i < migrate_functions_count; i++) {
		char sum[65];
		migrate_checksum(migrate_functions[i].sql, sum);
		const char *params[] = {migrate_functions[i].name, sum};
		long n = t_sql_long(db,
		                    "SELECT count(*) FROM schema_functions"
		                    " WHERE name = $1 AND checksum = $2",
		                    2, params);
		cr_expect_eq(n, 1, "function file %s is not recorded with its checksum",
		             migrate_functions[i].name);
	}
}

/* A connection for migrate_run to the database at url (caller closes). */
static db_conn *migrate_conn(const char *url)
{
	db_conn *c = NULL;
	const struct db_opts opts = {.statement_timeout_ms = MIGRATE_TIMEOUT_MS};
	cr_assert_eq(db_open(url, &opts, false, &c), BR_OK, "cannot connect to %s", url);
	return c;
}

/* A libpq connection to url, warnings and worse only (caller finishes). */
static PGconn *connect_url(const char *url)
{
	PGconn *db = PQconnectdb(url);
	cr_assert_eq(PQstatus(db), CONNECTION_OK, "cannot connect to %s", url);
	PQclear(PQexec(db, "SET client_min_messages = error"));
	return db;
}

/* ---- the first development cycle's migrations, as its runner applied them ---- */

/* The text of tests/integration/legacy_sql/NAME.sql (caller frees). */
static char *legacy_text(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/tests/integration/legacy_sql/%s.sql", BULKREG_SOURCE_DIR,
	         name);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s", path);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	long size = ftell(f);
	cr_assert_gt(size, 0, "%s is empty", path);
	rewind(f);
	char *text = malloc((size_t)size + 1);
	cr_assert_not_null(text);
	size_t n = fread(text, 1, (size_t)size, f);
	fclose(f);
	cr_assert_eq(n, (size_t)size, "short read of %s", path);
	text[n] = '\0';
	return text;
}

/* Runs text (any number of statements) on db, fatal on error. */
static void exec_or_die(PGconn *db, const char *text, const char *what)
{
	PGresult *res = PQexec(db, text);
	ExecStatusType es = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	cr_assert(es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK, "%s failed: %s", what,
	          res ? PQresultErrorMessage(res) : PQerrorMessage(db));
	PQclear(res);
}

/* Applies legacy migrations [from, to) the way the first cycle's runner did. */
static void legacy_apply(PGconn *db, size_t from, size_t to)
{
	exec_or_die(db,
	            "CREATE TABLE IF NOT EXISTS schema_migrations ("
	            " version int PRIMARY KEY,"
	            " name text NOT NULL,"
	            " applied_at timestamptz NOT NULL DEFAULT now())",
	            "schema_migrations");
	for (size_t i = from; i < to; i++) {
		char *text = legacy_text(migrate_legacy_names[i]);
		char version[24];
		snprintf(version, sizeof(version), "%zu", i + 1);
		const char *params[] = {version, migrate_legacy_names[i]};
		exec_or_die(db, "BEGIN", "BEGIN");
		exec_or_die(db, text, migrate_legacy_names[i]);
		PQclear(t_sql(db,
		              "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)",
		              2, params));
		exec_or_die(db, "COMMIT", "COMMIT");
		free(text);
	}
}

/* ---- tests ---- */

Test(migrate, embedded_files_are_ordered)
{
	cr_assert_gt(migrate_embedded_count, 0);
	cr_assert_eq(migrate_embedded[0].version, 1, "the baseline is not migration 1");
	for (size_t i = 1; i < migrate_embedded_count; i++)
		cr_expect_lt(migrate_embedded[i - 1].version, migrate_embedded[i].version,
		             "%s before %s", migrate_embedded[i - 1].name,
		             migrate_embedded[i].name);
	cr_assert_gt(migrate_functions_count, 0);
	for (size_t i = 1; i < migrate_functions_count; i++)
		cr_expect_lt(strcmp(migrate_functions[i - 1].name, migrate_functions[i].name), 0,
		             "%s before %s", migrate_functions[i - 1].name,
		             migrate_functions[i].name);
}

Test(migrate, second_run_is_a_no_op)
{
	PGconn *db = t_db(); /* migrates once per process */
	assert_all_recorded_once(db);
	char *before = snapshot(db);
	char *catalog_before = catalog(db);

	char out[1024];
	const char *args[] = {"migrate", NULL};
	int rc = t_admin(out, sizeof(out), args);
	cr_assert_eq(rc, 0, "bulkreg-admin migrate exited %d: %s", rc, out);
	cr_expect(strstr(out, "migrations applied: 0") && strstr(out, "function files applied: 0"),
	          "bulkreg-admin migrate said: %s", out);
	char *after_admin = snapshot(db);
	cr_assert_str_eq(after_admin, before, "bulkreg-admin migrate changed what is recorded");

	cr_assert_eq(t_migrate(t_database_url()), 0, "a second run applied something");
	char *after = snapshot(db);
	cr_assert_str_eq(after, before, "migrate_run changed what is recorded");
	char *catalog_after = catalog(db);
	expect_same_catalog(catalog_after, catalog_before, "a second run changed the catalog");
	free(before);
	free(after_admin);
	free(after);
	free(catalog_before);
	free(catalog_after);
	PQfinish(db);
}

/* The number after label in bulkreg-admin's output in a log; -1 when absent. */
static int count_in_log(const char *path, const char *label)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char line[512];
	int n = -1;
	while (fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, label);
		if (p)
			n = (int)strtol(p + strlen(label), NULL, 10);
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
	int schema_total = 0, functions_total = 0;
	for (int i = 0; i < 2; i++) {
		int rc = t_proc_stop(&p[i], 0, MIGRATE_TIMEOUT_MS);
		if (rc != 0)
			t_proc_print_log(&p[i], 40);
		cr_assert_eq(rc, 0, "migrate #%d exited %d (log %s)", i + 1, rc, p[i].log_path);
		int n = count_in_log(p[i].log_path, "migrations applied: ");
		int f = count_in_log(p[i].log_path, "function files applied: ");
		cr_expect_geq(n, 0, "no \"migrations applied\" line in %s", p[i].log_path);
		cr_expect_geq(f, 0, "no \"function files applied\" line in %s", p[i].log_path);
		schema_total += n;
		functions_total += f;
	}
	cr_expect_eq(schema_total, (int)migrate_embedded_count,
	             "the two runs applied %d migrations together, not %zu", schema_total,
	             migrate_embedded_count);
	cr_expect_eq(functions_total, (int)migrate_functions_count,
	             "the two runs applied %d function files together, not %zu", functions_total,
	             migrate_functions_count);

	PGconn *db = connect_url(scratch_url);
	assert_all_recorded_once(db);
	char *before = snapshot(db);
	/* The schema is whole: the same catalog as a plain run gives. */
	cr_assert_eq(t_migrate(reference_url),
	             (int)(migrate_embedded_count + migrate_functions_count));
	PGconn *ref = connect_url(reference_url);
	char *want = catalog(ref), *got = catalog(db);
	expect_same_catalog(got, want,
	                    "the concurrently migrated schema differs from a plain run's");
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
 * A database the first cycle's migrations 001..011 built: migrate records
 * the baseline without running it, runs what came after it (002 drops
 * batch_unlocked, 003 the Unicode address key and the job scan bound) and
 * applies the function files; the catalog is then a fresh database's.
 */
Test(migrate, first_cycle_database_upgrades_to_the_same_catalog, .fini = t_scratch_drop_all,
     .timeout = 600)
{
	char old_url[1024], fresh_url[1024];
	t_scratch_create(old_url, sizeof(old_url));
	t_scratch_create(fresh_url, sizeof(fresh_url));
	PGconn *db = connect_url(old_url);
	legacy_apply(db, 0, migrate_legacy_count);
	cr_assert_eq(t_sql_long(db, "SELECT count(*) FROM pg_proc WHERE proname = 'batch_unlocked'",
	                        0, NULL),
	             1, "the legacy fixtures did not build the first cycle's schema");

	db_conn *c = migrate_conn(old_url);
	struct migrate_counts n = {0};
	char why[512];
	cr_assert_eq(migrate_run(c, &migrate_embedded_set, &n, why, sizeof(why)), BR_OK, "%s", why);
	cr_expect(n.adopted, "the first cycle's database was not recognised");
	cr_expect_eq(n.schema, (int)migrate_embedded_count - 1, "%d migrations ran", n.schema);
	cr_expect_eq(n.functions, (int)migrate_functions_count, "%d function files ran",
	             n.functions);
	assert_all_recorded_once(db);
	cr_expect_eq(t_sql_long(db, "SELECT count(*) FROM pg_proc WHERE proname = 'batch_unlocked'",
	                        0, NULL),
	             0, "batch_unlocked() is still there");

	cr_assert_eq(t_migrate(fresh_url), (int)(migrate_embedded_count + migrate_functions_count));
	PGconn *fresh = connect_url(fresh_url);
	char *want = catalog(fresh), *got = catalog(db);
	expect_same_catalog(got, want, "the upgraded database differs from a fresh one");

	/* Nothing more to do, twice: as a library and as bulkreg-admin. */
	char *before = snapshot(db);
	cr_assert_eq(t_migrate(old_url), 0);
	char env_url[1100];
	snprintf(env_url, sizeof(env_url), "DATABASE_URL=%s", old_url);
	const char *env[] = {env_url, NULL};
	const char *args[] = {"migrate", NULL};
	char out[1024] = "", err[4096] = "";
	int rc = t_run("bulkreg-admin", args, env, out, sizeof(out), err, sizeof(err),
	               MIGRATE_TIMEOUT_MS);
	cr_expect_eq(rc, 0, "bulkreg-admin migrate exited %d: %s", rc, err);
	char *after = snapshot(db);
	cr_expect_str_eq(after, before);
	free(before);
	free(after);
	free(want);
	free(got);
	PQfinish(fresh);
	PQfinish(db);
	db_close(c);
}

/* A history that stops inside the first cycle is refused, and left as it was. */
Test(migrate, partial_first_cycle_history_is_refused, .fini = t_scratch_drop_all)
{
	char url[1024];
	t_scratch_create(url, sizeof(url));
	PGconn *db = connect_url(url);
	legacy_apply(db, 0, 5);
	static const char history[] =
	    "SELECT string_agg(version || ':' || name || ':' || applied_at, ',' ORDER BY version)"
	    "  FROM schema_migrations";
	char *before = t_sql_text(db, history, 0, NULL);
	db_conn *c = migrate_conn(url);
	char why[512];
	cr_assert_eq(migrate_run(c, &migrate_embedded_set, NULL, why, sizeof(why)), BR_CONFLICT);
	cr_expect(strstr(why, "005_task_person_link") != NULL, "the refusal says: %s", why);
	cr_expect_eq(
	    t_sql_long(db, "SELECT count(*) FROM pg_proc WHERE proname = 'batch_take'", 0, NULL), 0,
	    "a function file was applied to a refused database");
	char *after = t_sql_text(db, history, 0, NULL);
	cr_expect_str_eq(after, before);
	free(before);
	free(after);
	PQfinish(db);
	db_close(c);
}

/*
 * Migration 003 on a first-cycle database that already held
 * addresses which become one under Unicode case folding: nobody is merged
 * or removed; the later person of each pair is marked with the earlier
 * one. After the upgrade the marks stand: the earliest
 * keeps the address for duplicate checks, and an override updates it, not
 * a marked one.
 */
Test(migrate, unicode_folding_marks_existing_duplicates, .fini = t_scratch_drop_all)
{
	char url[1024];
	t_scratch_create(url, sizeof(url));
	PGconn *db = connect_url(url);
	legacy_apply(db, 0, migrate_legacy_count);

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
	cr_assert_eq(t_migrate(url), (int)(migrate_embedded_count - 1 + migrate_functions_count));

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
	char *dup =
	    t_sql_text(db,
	               "SELECT r.outcome || ':' || r.error_code FROM person_apply($1, 'register',"
	               " '{\"email\":\"E\xcc\x81MILE@X.ORG\"}', false, false, false, NULL) r",
	               1, p);
	cr_expect_str_eq(dup, "failed:already_registered");
	free(dup);
	/*
	 * An override updates the earliest person, never a marked one (read
	 * back by a later statement: the calling one's snapshot predates it).
	 */
	char *over =
	    t_sql_text(db,
	               "SELECT r.outcome || ':' || (SELECT q.position FROM people q"
	               "                            WHERE q.id = r.person_id)"
	               " FROM person_apply($1, 'register', '{\"email\":\"e\xcc\x81mile@X.org\","
	               "  \"first_name\":\"Émile\"}', true, false, false, NULL) r",
	               1, p);
	cr_expect_str_eq(over, "succeeded:0");
	free(over);
	char *named = t_sql_text(db,
	                         "SELECT string_agg(position || ':' || first_name, ' ')"
	                         " FROM people WHERE session_id = $1 AND first_name IS NOT NULL",
	                         1, p);
	cr_expect_str_eq(named, "0:Émile", "the override wrote: %s", named);
	free(named);
	free(org);
	PQfinish(db);
}

/*
 * A migration recorded as applied whose text changed is refused, before
 * anything is applied, naming the file: by migrate_run given the edited
 * text, and by bulkreg-admin migrate (exit status 1) when the recorded
 * checksum is another.
 */
Test(migrate, edited_applied_migration_is_refused, .fini = t_scratch_drop_all, .timeout = 300)
{
	char url[1024];
	t_scratch_create(url, sizeof(url));
	t_migrate(url);
	PGconn *db = connect_url(url);
	char *before = snapshot(db);

	struct migration schema[64], functions[64];
	cr_assert_leq(migrate_embedded_count, 64);
	cr_assert_leq(migrate_functions_count, 64);
	memcpy(schema, migrate_embedded, migrate_embedded_count * sizeof(schema[0]));
	memcpy(functions, migrate_functions, migrate_functions_count * sizeof(functions[0]));
	size_t last = migrate_embedded_count - 1;
	size_t len = strlen(schema[last].sql);
	char *edited = malloc(len + 64);
	cr_assert_not_null(edited);
	memcpy(edited, schema[last].sql, len);
	memcpy(edited + len, "\n-- edited after it was applied\n", 33);
	schema[last].sql = edited;
	/* A changed function file too: it must not be applied either. */
	functions[0].sql = "SELECT 1;";
	const struct migrate_set set = {schema, migrate_embedded_count, functions,
	                                migrate_functions_count};

	db_conn *c = migrate_conn(url);
	char why[512];
	struct migrate_counts n = {0};
	cr_assert_eq(migrate_run(c, &set, &n, why, sizeof(why)), BR_CONFLICT);
	char file[128];
	snprintf(file, sizeof(file), "sql/migrations/%s.sql", schema[last].name);
	cr_expect(strstr(why, file) != NULL, "the refusal does not name %s: %s", file, why);
	char *after = snapshot(db);
	cr_expect_str_eq(after, before, "a refused run changed what is recorded");
	free(after);

	PQclear(t_sql(db,
	              "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1",
	              0, NULL));
	char env_url[1100];
	snprintf(env_url, sizeof(env_url), "DATABASE_URL=%s", url);
	const char *env[] = {env_url, NULL};
	const char *args[] = {"migrate", NULL};
	char out[1024] = "", err[4096] = "";
	int rc = t_run("bulkreg-admin", args, env, out, sizeof(out), err, sizeof(err),
	               MIGRATE_TIMEOUT_MS);
	cr_expect_eq(rc, 1, "bulkreg-admin migrate exited %d: %s", rc, out);
	snprintf(file, sizeof(file), "sql/migrations/%s.sql", migrate_embedded[0].name);
	cr_expect(strstr(err, file) && strstr(err, "changed"),
	          "bulkreg-admin's error does not name %s: %s", file, err);
	free(edited);
	free(before);
	PQfinish(db);
	db_close(c);
}

/*
 * Function files are applied by checksum: an unchanged one is not run
 * again (even when the database's copy of a function drifted), an edited
 * one is applied again, once, and a new one is applied.
 */
Test(migrate, edited_function_file_is_reapplied, .fini = t_scratch_drop_all, .timeout = 300)
{
	char url[1024];
	t_scratch_create(url, sizeof(url));
	t_migrate(url);
	PGconn *db = connect_url(url);
	size_t k = 0;
	while (k < migrate_functions_count && strcmp(migrate_functions[k].name, "resources"))
		k++;
	cr_assert_lt(k, migrate_functions_count, "no sql/functions/resources.sql");
	static const char probe[] = "SELECT task_error_message('session_full')";
	char *want = t_sql_text(db, probe, 0, NULL);
	PQclear(t_sql(db,
	              "CREATE OR REPLACE FUNCTION task_error_message(code text) RETURNS text"
	              " LANGUAGE sql IMMUTABLE AS $$ SELECT 'drifted' $$",
	              0, NULL));
	cr_assert_eq(t_migrate(url), 0, "an unchanged function file was applied again");
	char *got = t_sql_text(db, probe, 0, NULL);
	cr_expect_str_eq(got, "drifted");
	free(got);
	char *before = snapshot(db);

	struct migration functions[64];
	cr_assert_leq(migrate_functions_count, 63);
	memcpy(functions, migrate_functions, migrate_functions_count * sizeof(functions[0]));
	size_t len = strlen(functions[k].sql);
	char *edited = malloc(len + 64);
	cr_assert_not_null(edited);
	memcpy(edited, functions[k].sql, len);
	memcpy(edited + len, "\n-- edited\n", 12);
	functions[k].sql = edited;
	struct migrate_set set = {migrate_embedded, migrate_embedded_count, functions,
	                          migrate_functions_count};
	db_conn *c = migrate_conn(url);
	struct migrate_counts n = {0};
	char why[512];
	cr_assert_eq(migrate_run(c, &set, &n, why, sizeof(why)), BR_OK, "%s", why);
	cr_expect_eq(n.schema, 0);
	cr_expect_eq(n.functions, 1, "%d function files applied for one edit", n.functions);
	got = t_sql_text(db, probe, 0, NULL);
	cr_expect_str_eq(got, want, "the edited file did not replace the drifted function");
	free(got);
	char sum[65];
	migrate_checksum(edited, sum);
	const char *params[] = {functions[k].name, sum};
	cr_expect_eq(t_sql_long(db,
	                        "SELECT count(*) FROM schema_functions WHERE name = $1"
	                        " AND checksum = $2",
	                        2, params),
	             1, "the edited file's checksum is not recorded");
	cr_expect_eq(t_sql_long(db,
	                        "SELECT count(*) FROM schema_functions WHERE name <> $1"
	                        " AND strpos($2, name || ':' || applied_at) > 0",
	                        2, (const char *[]){functions[k].name, before}),
	             (long)migrate_functions_count - 1, "another function file was applied");

	/* The same again: nothing. A new file: applied. */
	char *mid = snapshot(db);
	cr_assert_eq(migrate_run(c, &set, &n, why, sizeof(why)), BR_OK, "%s", why);
	cr_expect_eq(n.functions, 0);
	char *after = snapshot(db);
	cr_expect_str_eq(after, mid);
	functions[migrate_functions_count] =
	    (struct migration){0, "zz_probe",
	                       "CREATE OR REPLACE FUNCTION migrate_probe() RETURNS int"
	                       " LANGUAGE sql AS $$ SELECT 42 $$;"};
	set.n_functions = migrate_functions_count + 1;
	cr_assert_eq(migrate_run(c, &set, &n, why, sizeof(why)), BR_OK, "%s", why);
	cr_expect_eq(n.functions, 1);
	cr_expect_eq(t_sql_long(db, "SELECT migrate_probe()", 0, NULL), 42);
	free(edited);
	free(want);
	free(before);
	free(mid);
	free(after);
	PQfinish(db);
	db_close(c);
}
