/*
 * test_register_people.c - register_people() (sql/functions/registration.sql)
 * registers a list of people into a session with one statement. The
 * registration rules were first written person by person; this test keeps
 * that original as its own text (test_register_people.sql beside it),
 * installs it as a temporary function and checks that both give the same
 * outcome, error code and person for every entry, and leave the same people
 * (address, position, status, fields, task) and the same session counters,
 * on random sessions (capacity, waitlist, approval, people already there)
 * and random lists with repeated addresses in mixed case (across Unicode,
 * and decomposed), override and auto_approve per entry. Both compare
 * addresses with email_key() (sql/migrations/001_baseline.sql).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

#define TRIALS "400"

/*
 * The one-at-a-time rules, pg_temp.register_person_sequential(), from
 * test_register_people.sql (caller frees).
 */
static char *sequential_function(void)
{
	const char *path = BULKREG_SOURCE_DIR "/tests/integration/test_register_people.sql";
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "cannot open %s", path);
	size_t cap = 1 << 16;
	char *text = malloc(cap);
	cr_assert_not_null(text);
	size_t n = fread(text, 1, cap - 1, f);
	cr_assert(feof(f), "%s is larger than %zu bytes", path, cap - 1);
	fclose(f);
	text[n] = '\0';
	cr_assert_not_null(strstr(text, "CREATE FUNCTION pg_temp.register_person_sequential("),
	                   "%s defines no pg_temp.register_person_sequential()", path);
	return text;
}

/*
 * Runs TRIALS random cases in the organization bulkreg_test.org; every
 * case that differs goes to pg_temp.mismatches.
 */
static const char compare[] =
    "DO $$\n"
    "DECLARE\n"
    "  org uuid := current_setting('bulkreg_test.org')::uuid;\n"
    "  sa uuid; sb uuid; cap int; wl boolean; appr text; n int; k int; em text;\n"
    "  ppl jsonb[]; ov boolean[]; au boolean[]; tk uuid[]; r record;\n"
    "  oa text; ob text; ia text; ib text;\n"
    "BEGIN\n"
    "  PERFORM setseed(0.4242);\n"
    "  FOR trial IN 1.." TRIALS " LOOP\n"
    "    cap := CASE WHEN random() < 0.3 THEN NULL ELSE floor(random() * 8)::int END;\n"
    "    wl := random() < 0.5;\n"
    "    appr := CASE WHEN random() < 0.3 THEN 'manual' ELSE 'automatic' END;\n"
    "    INSERT INTO sessions (organization_id, title, starts_at, capacity, waitlist, approval)\n"
    "    VALUES (org, 'sequential', now() + interval '1 day', cap, wl, appr) RETURNING id INTO "
    "sa;\n"
    "    INSERT INTO sessions (organization_id, title, starts_at, capacity, waitlist, approval)\n"
    "    VALUES (org, 'set', now() + interval '1 day', cap, wl, appr) RETURNING id INTO sb;\n"
    "    FOR e IN 1..floor(random() * 4)::int LOOP\n"
    "      em := pg_temp.address();\n"
    "      k := (random() < 0.5)::int;\n"
    "      PERFORM pg_temp.register_person_sequential(sa,\n"
    "          jsonb_build_object('email', em, 'first_name', 'before'), false, k = 1, NULL);\n"
    "      PERFORM pg_temp.register_person_sequential(sb,\n"
    "          jsonb_build_object('email', em, 'first_name', 'before'), false, k = 1, NULL);\n"
    "    END LOOP;\n"
    "    n := 1 + floor(random() * 12)::int;\n"
    "    ppl := '{}'; ov := '{}'; au := '{}'; tk := '{}';\n"
    "    FOR k IN 1..n LOOP\n"
    "      em := pg_temp.address();\n"
    "      ppl := ppl || (jsonb_build_object('email', em, 'first_name', 'f' || k)\n"
    "                     || CASE WHEN random() < 0.5 THEN jsonb_build_object('last_name', 'l' || "
    "k)\n"
    "                             ELSE '{}'::jsonb END);\n"
    "      ov := ov || (random() < 0.4);\n"
    "      au := au || (random() < 0.5);\n"
    "      tk := tk || gen_random_uuid();\n"
    "    END LOOP;\n"
    "    oa := '';\n"
    "    FOR k IN 1..n LOOP\n"
    "      SELECT * INTO r FROM pg_temp.register_person_sequential(sa, ppl[k], ov[k], au[k], "
    "tk[k]);\n"
    "      oa := oa || format('%s:%s:%s ', r.outcome, r.error_code,\n"
    "                         (SELECT email_key(email) FROM people WHERE id = r.person_id));\n"
    "    END LOOP;\n"
    "    TRUNCATE pg_temp.set_result;\n"
    "    INSERT INTO pg_temp.set_result SELECT * FROM register_people(sb, ppl, ov, au, tk);\n"
    "    SELECT coalesce(string_agg(format('%s:%s:%s ', x.outcome, x.error_code,\n"
    "                   (SELECT email_key(email) FROM people WHERE id = x.person_id)), ''\n"
    "                   ORDER BY x.ord), '') INTO ob FROM pg_temp.set_result x;\n"
    "    SELECT format('%s | %s %s %s %s', string_agg(format('%s/%s/%s/%s/%s/%s', "
    "email_key(p.email),\n"
    "                  p.position, p.registration_status, p.first_name, p.last_name, p.task_id),\n"
    "                  ',' ORDER BY p.position),\n"
    "                  min(s.registrants_count), min(s.pending_count), min(s.waitlist_count),\n"
    "                  min(s.people_count))\n"
    "    INTO ia FROM sessions s LEFT JOIN people p ON p.session_id = s.id WHERE s.id = sa;\n"
    "    SELECT format('%s | %s %s %s %s', string_agg(format('%s/%s/%s/%s/%s/%s', "
    "email_key(p.email),\n"
    "                  p.position, p.registration_status, p.first_name, p.last_name, p.task_id),\n"
    "                  ',' ORDER BY p.position),\n"
    "                  min(s.registrants_count), min(s.pending_count), min(s.waitlist_count),\n"
    "                  min(s.people_count))\n"
    "    INTO ib FROM sessions s LEFT JOIN people p ON p.session_id = s.id WHERE s.id = sb;\n"
    "    IF oa <> ob OR ia <> ib THEN\n"
    "      INSERT INTO pg_temp.mismatches VALUES (trial,\n"
    "        format('capacity %s, waitlist %s, approval %s, override %s, auto_approve %s, people "
    "%s',\n"
    "               cap, wl, appr, ov, au, ppl),\n"
    "        oa, ob, ia, ib);\n"
    "    END IF;\n"
    "  END LOOP;\n"
    "END $$";

Test(register_people, same_outcomes_and_people_as_one_by_one, .timeout = 120)
{
	struct t_org org;
	t_org_new(&org);
	PGconn *db = t_db();
	char *fn = sequential_function();
	PQclear(t_sql(db, fn, 0, NULL));
	free(fn);
	/*
	 * One of six addresses, ASCII and not, written as a person might: in
	 * upper case (ICU's, so Ä and ß change too) or decomposed (NFD).
	 */
	PQclear(t_sql(db,
	              "CREATE FUNCTION pg_temp.address() RETURNS text LANGUAGE sql AS $$"
	              " SELECT CASE floor(random() * 3)::int WHEN 0 THEN a"
	              "   WHEN 1 THEN upper(a COLLATE \"und-x-icu\") ELSE normalize(a, NFD) END"
	              " FROM (SELECT (ARRAY['p0', 'p1', 'émile', 'straße', 'bücher', 'ﬁx'])"
	              "   [1 + floor(random() * 6)::int] || '@exämple.com' AS a) x $$",
	              0, NULL));
	PQclear(t_sql(db,
	              "CREATE TEMP TABLE set_result (ord int, outcome text, error_code text,"
	              " person_id uuid)",
	              0, NULL));
	PQclear(t_sql(db,
	              "CREATE TEMP TABLE mismatches (trial int, setup text, sequential text,"
	              " set text, sequential_people text, set_people text)",
	              0, NULL));
	const char *params[] = {org.id};
	PQclear(t_sql(db, "SELECT set_config('bulkreg_test.org', $1, false)", 1, params));
	/* Everything the cases write is rolled back once their results are read. */
	PQclear(t_sql(db, "BEGIN", 0, NULL));
	PQclear(t_sql(db, compare, 0, NULL));

	PGresult *res = t_sql(db, "SELECT count(*), min(trial) FROM pg_temp.mismatches", 0, NULL);
	long bad = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	if (bad > 0) {
		res = t_sql(db,
		            "SELECT setup, sequential, set, sequential_people, set_people"
		            " FROM pg_temp.mismatches ORDER BY trial LIMIT 1",
		            0, NULL);
		cr_expect_fail("%ld of " TRIALS " cases differ; the first:\n  %s\n"
		               "  one by one: %s\n  register_people: %s\n"
		               "  people one by one: %s\n  people register_people: %s",
		               bad, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
		               PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4));
		PQclear(res);
	}
	PQclear(t_sql(db, "ROLLBACK", 0, NULL));
	PQfinish(db);
}

Test(register_people, closed_and_missing_sessions_fail_every_entry)
{
	struct t_org org;
	t_org_new(&org);
	PGconn *db = t_db();
	const char *params[] = {org.id};
	PGresult *res = t_sql(
	    db,
	    "WITH s AS (INSERT INTO sessions (organization_id, title, starts_at,"
	    "           registration_closes_at)"
	    " VALUES ($1, 'closed', now() + interval '1 day', now() - interval '1 minute')"
	    " RETURNING id)"
	    " SELECT string_agg(format('%s:%s:%s', r.outcome, r.error_code, r.person_id), ' '"
	    "                   ORDER BY r.ord)"
	    " FROM s, register_people(s.id,"
	    "   ARRAY['{\"email\":\"a@example.com\"}', '{\"email\":\"A@example.com\"}']::jsonb[],"
	    "   '{t,f}', '{f,f}', ARRAY[NULL, NULL]::uuid[]) r",
	    1, params);
	cr_expect_str_eq(PQgetvalue(res, 0, 0),
	                 "failed:registration_closed: failed:registration_closed:");
	PQclear(res);
	res =
	    t_sql(db,
	          "SELECT string_agg(format('%s:%s:%s', r.outcome, r.error_code, r.person_id), ' '"
	          "                  ORDER BY r.ord)"
	          " FROM register_people(gen_random_uuid(),"
	          "   ARRAY['{\"email\":\"a@example.com\"}']::jsonb[], '{f}', '{f}', '{NULL}') r",
	          0, NULL);
	cr_expect_str_eq(PQgetvalue(res, 0, 0), "failed:session_not_found:");
	PQclear(res);
	cr_expect_eq(
	    t_sql_long(db,
	               "SELECT count(*) FROM people p JOIN sessions s ON s.id = p.session_id"
	               " WHERE s.organization_id = $1",
	               1, params),
	    0);
	PQfinish(db);
}
