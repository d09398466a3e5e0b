/*
 * test_register_people.c - session_apply() (sql/functions/registration.sql)
 * applies a list of entries to a session in one call: registrations and the
 * actions approve, deny and cancel. The rules (docs/architecture.md, "The
 * registration rules, once") promise exactly what applying the entries one
 * by one in list order gives. This test keeps its own plain, one-at-a-time
 * writing of those rules (test_register_people.sql beside it), installs it
 * as temporary functions and checks that both give the same outcome, error
 * code and person for every entry, and leave the same people (position,
 * email, external_id, status, waitlist_position, names, track, center,
 * fields, task) and the same session counters.
 *
 * The cases are random but fixed (setseed): sessions with and without
 * tracks, with a capacity or none, a waiting list or none, manual or
 * automatic approval, sometimes with the window shut; people already there
 * (registered, pending, explicitly waitlisted, denied, cancelled, promoted:
 * put there by the reference in both sessions); then lists that mix
 * registrations (by email, external_id or both, colliding with each other
 * and with the people there, in mixed case across Unicode, with valid and
 * unknown tracks, waitlist, override_duplicates and auto_approve per entry)
 * with actions on people there or not. Some cases then raise the capacity
 * (session_patch() in sql/functions/lifecycle.sql against the reference),
 * which hands seats to the waiting list. The test also counts what the
 * cases exercised and fails if a rule went untried.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

#define TRIALS "1000"

/* Runs a script of several statements (PQexec); fatal on error. */
static void exec_script(PGconn *db, const char *script)
{
	PGresult *res = PQexec(db, script);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "script failed: %s",
	          res ? PQresultErrorMessage(res) : PQerrorMessage(db));
	PQclear(res);
}

/*
 * The one-at-a-time rules, pg_temp.register_person_sequential() and its
 * helpers, from test_register_people.sql (caller frees).
 */
static char *sequential_functions(void)
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
 * What the cases are drawn from, as temporary functions. An address is one
 * of six, ASCII and not, written as a person might: in upper case (ICU's,
 * so Ä and ß change too) or decomposed (NFD). An external_id is one of six,
 * two of which differ only in case (external ids are compared exactly).
 * An identity is email, external_id or both, drawn from those or, with
 * probability p_known, the identity of a person of the session.
 */
static const char *const generators[] = {
    "CREATE FUNCTION pg_temp.address() RETURNS text LANGUAGE sql AS $$"
    " SELECT CASE floor(random() * 3)::int WHEN 0 THEN a"
    "   WHEN 1 THEN upper(a COLLATE \"und-x-icu\") ELSE normalize(a, NFD) END"
    " FROM (SELECT (ARRAY['p0', 'p1', 'émile', 'straße', 'bücher', 'ﬁx'])"
    "   [1 + floor(random() * 6)::int] || '@exämple.com' AS a) x $$",

    "CREATE FUNCTION pg_temp.external() RETURNS text LANGUAGE sql AS $$"
    " SELECT (ARRAY['x0', 'x1', 'X1', 'x2', 'x3', 'ü4'])[1 + floor(random() * 6)::int] $$",

    "CREATE FUNCTION pg_temp.identity(p_session uuid, p_known float8) RETURNS jsonb\n"
    "LANGUAGE plpgsql AS $$\n"
    "DECLARE\n"
    "  k int := floor(random() * 3)::int;\n"
    "  pos int;\n"
    "  x people;\n"
    "BEGIN\n"
    "  IF random() < p_known THEN\n"
    "    pos := floor(random() * (SELECT count(*) FROM people p\n"
    "                             WHERE p.session_id = p_session))::int;\n"
    "    SELECT * INTO x FROM people p WHERE p.session_id = p_session AND p.position = pos;\n"
    "    IF FOUND THEN\n"
    "      RETURN jsonb_strip_nulls(jsonb_build_object(\n"
    "        'email', CASE WHEN k <> 1 OR x.external_id IS NULL THEN x.email END,\n"
    "        'external_id', CASE WHEN k <> 0 OR x.email IS NULL THEN x.external_id END));\n"
    "    END IF;\n"
    "  END IF;\n"
    "  RETURN CASE k WHEN 0 THEN jsonb_build_object('email', pg_temp.address())\n"
    "                WHEN 1 THEN jsonb_build_object('external_id', pg_temp.external())\n"
    "                ELSE jsonb_build_object('email', pg_temp.address(),\n"
    "                                        'external_id', pg_temp.external()) END;\n"
    "END $$",

    /* An entry: an action with probability p_actions, else a registration. */
    "CREATE FUNCTION pg_temp.entry(p_session uuid, k int, p_actions float8,\n"
    "                              OUT action text, OUT person jsonb, OUT override boolean,\n"
    "                              OUT auto_approve boolean, OUT waitlist boolean)\n"
    "LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  action := CASE WHEN random() < p_actions\n"
    "                 THEN (ARRAY['approve', 'deny', 'cancel'])[1 + floor(random() * 3)::int]\n"
    "                 ELSE 'register' END;\n"
    "  person := pg_temp.identity(p_session, CASE action WHEN 'register' THEN 0.25 ELSE 0.7 END);\n"
    "  IF action = 'register' THEN\n"
    "    person := person || jsonb_build_object('first_name', 'f' || k);\n"
    "    IF random() < 0.4 THEN\n"
    "      person := person || jsonb_build_object('last_name', 'l' || k);\n"
    "    END IF;\n"
    "    IF random() < 0.3 THEN\n"
    "      person := person || jsonb_build_object('center_id', 'c' || k);\n"
    "    END IF;\n"
    "    IF random() < 0.2 THEN\n"
    "      person := person || jsonb_build_object('fields', jsonb_build_array(k));\n"
    "    END IF;\n"
    "    IF random() < 0.35 THEN -- tracks 1 and 2 exist in sessions with tracks\n"
    "      person := person || jsonb_build_object('track_id', 1 + floor(random() * 3)::int);\n"
    "    END IF;\n"
    "  END IF;\n"
    "  override := random() < 0.3;\n"
    "  auto_approve := random() < 0.3;\n"
    "  waitlist := random() < 0.2;\n"
    "END $$",

    "CREATE FUNCTION pg_temp.describe(a text, p jsonb, o boolean, au boolean, w boolean)\n"
    "RETURNS text LANGUAGE sql AS $$\n"
    "  SELECT format('%s %s%s%s%s', a, p, CASE WHEN o THEN ' override' ELSE '' END,\n"
    "                CASE WHEN au THEN ' auto_approve' ELSE '' END,\n"
    "                CASE WHEN w THEN ' waitlist' ELSE '' END) $$",

    /* An entry's result; the person by position (ids differ between sessions). */
    "CREATE FUNCTION pg_temp.result(o text, e text, p uuid) RETURNS text LANGUAGE sql AS $$\n"
    "  SELECT format('%s:%s:%s ', o, e, (SELECT position FROM people WHERE id = p)) $$",

    /* The people and the counters of a session. */
    "CREATE FUNCTION pg_temp.state(p_session uuid) RETURNS text LANGUAGE sql AS $$\n"
    "  SELECT format('%s | %s %s %s %s %s', string_agg(format(\n"
    "           '%s/%s/%s/%s/%s/%s/%s/%s/%s/%s/%s/%s', p.position, p.email, p.external_id,\n"
    "           p.registration_status, p.waitlist_seq,\n"
    "           person_resource(p, '')->'attributes'->>'waitlist_position',\n"
    "           p.first_name, p.last_name, p.track_id, p.center_id, p.fields, p.task_id),\n"
    "           ', ' ORDER BY p.position),\n"
    "         s.registrants_count, s.pending_count, s.waitlist_count, s.people_count,\n"
    "         s.waitlist_seq)\n"
    "  FROM sessions s LEFT JOIN people p ON p.session_id = s.id WHERE s.id = p_session\n"
    "  GROUP BY s.id $$",

    "CREATE TEMP TABLE set_result (ord int, outcome text, error_code text, person_id uuid)",
    "CREATE TEMP TABLE mismatches (trial int, setup text, list text, sequential text,"
    " set text, sequential_people text, set_people text)",
    "CREATE TEMP TABLE seen (what text)",
};

/*
 * A case's two sessions with the same random rules and the same people
 * already there (put there by the reference in both), the window then shut
 * in some: sa for the reference, sb for session_apply.
 */
static const char twin_sessions[] =
    "CREATE FUNCTION pg_temp.twin_sessions(org uuid, OUT sa uuid, OUT sb uuid, OUT cap int,\n"
    "                                      OUT shut text, OUT setup text)\n"
    "LANGUAGE plpgsql AS $$\n"
    "DECLARE\n"
    "  wl boolean := random() < 0.5;\n"
    "  appr text := CASE WHEN random() < 0.5 THEN 'manual' ELSE 'automatic' END;\n"
    "  trk jsonb := CASE WHEN random() < 0.4 THEN '[]'\n"
    "               ELSE '[{\"id\": 1, \"name\": \"A\"}, {\"id\": 2, \"name\": \"B\"}]' END;\n"
    "  e record;\n"
    "BEGIN\n"
    "  cap := CASE WHEN random() < 0.25 THEN NULL ELSE floor(random() * 6)::int END;\n"
    "  INSERT INTO sessions (organization_id, title, starts_at, capacity, waitlist, approval,\n"
    "                        tracks)\n"
    "  VALUES (org, 'sequential', now() + interval '1 day', cap, wl, appr, trk)\n"
    "  RETURNING id INTO sa;\n"
    "  INSERT INTO sessions (organization_id, title, starts_at, capacity, waitlist, approval,\n"
    "                        tracks)\n"
    "  VALUES (org, 'set', now() + interval '1 day', cap, wl, appr, trk) RETURNING id INTO sb;\n"
    "  setup := format('capacity %s, waitlist %s, approval %s, tracks %s; before:',\n"
    "                  cap, wl, appr, trk);\n"
    "  FOR k IN 1..floor(random() * 9)::int LOOP\n"
    "    e := pg_temp.entry(sa, -k, 0.35);\n"
    "    setup := setup || ' ' || pg_temp.describe(e.action, e.person, e.override,\n"
    "                                              e.auto_approve, e.waitlist) || ';';\n"
    "    PERFORM pg_temp.register_person_sequential(sa, e.action, e.person, e.override,\n"
    "                                               e.auto_approve, e.waitlist, NULL);\n"
    "    PERFORM pg_temp.register_person_sequential(sb, e.action, e.person, e.override,\n"
    "                                               e.auto_approve, e.waitlist, NULL);\n"
    "  END LOOP;\n"
    "  shut := CASE WHEN random() < 0.07 THEN 'closed'\n"
    "               WHEN random() < 0.05 THEN 'not yet open' END;\n"
    "  UPDATE sessions SET\n"
    "    registration_closes_at = CASE WHEN shut = 'closed'\n"
    "                                  THEN now() - interval '1 minute' END,\n"
    "    registration_opens_at = CASE WHEN shut = 'not yet open'\n"
    "                                 THEN now() + interval '1 hour' END\n"
    "  WHERE id IN (sa, sb);\n"
    "  setup := setup || coalesce(' window ' || shut, '');\n"
    "END $$";

/*
 * What a case applied with session_apply (pg_temp.set_result) exercised,
 * into pg_temp.seen. known: how many people sb had before the list;
 * waiting and gone: those of them waitlisted, and cancelled or denied.
 */
static const char record_seen[] =
    "CREATE FUNCTION pg_temp.record_seen(sb uuid, act text[], ppl jsonb[], ov boolean[],\n"
    "                                    wf boolean[], cap int, shut text, known int,\n"
    "                                    waiting uuid[], gone uuid[])\n"
    "RETURNS void LANGUAGE sql AS $$\n"
    "  INSERT INTO pg_temp.seen\n"
    "  SELECT coalesce(x.error_code, x.outcome || ' ' || act[x.ord]) FROM pg_temp.set_result x\n"
    "  UNION ALL SELECT 'registered anew' FROM pg_temp.set_result x\n"
    "  WHERE act[x.ord] = 'register' AND x.outcome = 'succeeded' AND x.person_id = ANY (gone)\n"
    "  UNION ALL SELECT 'action in a shut window' FROM pg_temp.set_result x\n"
    "  WHERE act[x.ord] <> 'register' AND x.outcome = 'succeeded' AND shut IS NOT NULL\n"
    "  UNION ALL SELECT 'waitlisted on request with a seat free' FROM pg_temp.set_result x\n"
    "  WHERE wf[x.ord] AND act[x.ord] = 'register' AND x.outcome = 'succeeded' AND cap IS NULL\n"
    "  UNION ALL SELECT 'override' FROM pg_temp.set_result x\n"
    "  WHERE act[x.ord] = 'register' AND ov[x.ord] AND x.outcome = 'succeeded'\n"
    "    AND x.person_id <> ALL (coalesce(gone, '{}'))\n"
    "    AND ((SELECT p.position < known FROM people p WHERE p.id = x.person_id)\n"
    "         OR EXISTS (SELECT 1 FROM pg_temp.set_result y\n"
    "                    WHERE y.ord < x.ord AND y.person_id = x.person_id))\n"
    "  UNION ALL SELECT 'email and external_id of two people' FROM pg_temp.set_result x\n"
    "  WHERE x.error_code = 'already_registered' AND EXISTS (\n"
    "    SELECT 1 FROM people a, people b\n"
    "    WHERE a.session_id = sb AND b.session_id = sb AND a.id <> b.id\n"
    "      AND email_key(a.email) = email_key(ppl[x.ord]->>'email')\n"
    "      AND b.external_id = ppl[x.ord]->>'external_id')\n"
    "  UNION ALL SELECT 'seat from the waiting list' FROM people p\n"
    "  WHERE p.id = ANY (waiting) AND p.registration_status IN ('registered', 'pending_approval')\n"
    "  UNION ALL SELECT 'status ' || p.registration_status FROM people p WHERE p.session_id = sb\n"
    "$$";

/*
 * Runs TRIALS random cases in the organization bulkreg_test.org; every
 * case that differs goes to pg_temp.mismatches.
 */
static const char compare[] =
    "DO $$\n"
    "DECLARE\n"
    "  org uuid := current_setting('bulkreg_test.org')::uuid;\n"
    "  c record; e record; r record; n int; newcap int; list text; patched text;\n"
    "  act text[]; ppl jsonb[]; ov boolean[]; au boolean[]; wf boolean[]; tk uuid[];\n"
    "  known int; waiting uuid[]; gone uuid[]; oa text; ob text; ia text; ib text;\n"
    "BEGIN\n"
    "  PERFORM setseed(0.4242);\n"
    "  FOR trial IN 1.." TRIALS " LOOP\n"
    "    c := pg_temp.twin_sessions(org);\n"
    "    n := 1 + floor(random() * 14)::int;\n"
    "    act := '{}'; ppl := '{}'; ov := '{}'; au := '{}'; wf := '{}'; tk := '{}'; list := '';\n"
    "    FOR k IN 1..n LOOP\n"
    "      e := pg_temp.entry(c.sa, k, 0.35);\n"
    "      act := act || e.action; ppl := ppl || e.person; ov := ov || e.override;\n"
    "      au := au || e.auto_approve; wf := wf || e.waitlist; tk := tk || gen_random_uuid();\n"
    "      list := list || pg_temp.describe(e.action, e.person, e.override, e.auto_approve,\n"
    "                                       e.waitlist) || '; ';\n"
    "    END LOOP;\n"
    "    SELECT count(*), array_agg(id) FILTER (WHERE registration_status = 'waitlisted'),\n"
    "           array_agg(id) FILTER (WHERE registration_status IN ('cancelled', 'denied'))\n"
    "    INTO known, waiting, gone FROM people WHERE session_id = c.sb;\n"
    "    oa := '';\n"
    "    FOR k IN 1..n LOOP\n"
    "      SELECT * INTO r FROM pg_temp.register_person_sequential(c.sa, act[k], ppl[k], ov[k],\n"
    "                                                              au[k], wf[k], tk[k]);\n"
    "      oa := oa || pg_temp.result(r.outcome, r.error_code, r.person_id);\n"
    "    END LOOP;\n"
    "    TRUNCATE pg_temp.set_result;\n"
    "    INSERT INTO pg_temp.set_result\n"
    "    SELECT * FROM session_apply(c.sb, act, ppl, ov, au, wf, tk);\n"
    "    SELECT coalesce(string_agg(pg_temp.result(x.outcome, x.error_code, x.person_id), ''\n"
    "                               ORDER BY x.ord), '')\n"
    "    INTO ob FROM pg_temp.set_result x;\n"
    "    ia := pg_temp.state(c.sa);\n"
    "    ib := pg_temp.state(c.sb);\n"
    "    PERFORM pg_temp.record_seen(c.sb, act, ppl, ov, wf, c.cap, c.shut, known, waiting,\n"
    "                                gone);\n"
    "    -- Some cases then raise the capacity: the waiting list takes the seats.\n"
    "    IF c.cap IS NOT NULL AND random() < 0.3 THEN\n"
    "      newcap := CASE WHEN random() >= 0.2 THEN c.cap + 1 + floor(random() * 3)::int END;\n"
    "      PERFORM pg_temp.capacity_sequential(c.sa, newcap);\n"
    "      SELECT x.outcome INTO patched\n"
    "      FROM session_patch(org, c.sb, jsonb_build_object('capacity', newcap)) x;\n"
    "      ia := format('%s => capacity %s: updated: %s', ia, newcap, pg_temp.state(c.sa));\n"
    "      ib := format('%s => capacity %s: %s: %s', ib, newcap, patched, pg_temp.state(c.sb));\n"
    "      INSERT INTO pg_temp.seen SELECT 'capacity raised' WHERE patched = 'updated';\n"
    "    END IF;\n"
    "    IF oa <> ob OR ia <> ib THEN\n"
    "      INSERT INTO pg_temp.mismatches VALUES (trial, c.setup, list, oa, ob, ia, ib);\n"
    "    END IF;\n"
    "  END LOOP;\n"
    "END $$";

/* What every run of the cases must have tried at least a few times. */
static const char *const exercised[] = {
    "succeeded register",
    "succeeded approve",
    "succeeded deny",
    "succeeded cancel",
    "already_registered",
    "email and external_id of two people",
    "session_full",
    "registration_closed",
    "unknown_track",
    "person_not_found",
    "invalid_transition",
    "registered anew",
    "action in a shut window",
    "waitlisted on request with a seat free",
    "override",
    "seat from the waiting list",
    "capacity raised",
    "status registered",
    "status pending_approval",
    "status waitlisted",
    "status denied",
    "status cancelled",
};

/* Fails the test for every item of exercised[] seen fewer than 20 times. */
static void expect_exercised(PGconn *db)
{
	char *all = t_sql_text(db,
	                       "SELECT string_agg(format('%s %s', what, n), ', ' ORDER BY what)"
	                       " FROM (SELECT what, count(*) n FROM pg_temp.seen GROUP BY what) x",
	                       0, NULL);
	for (size_t i = 0; i < sizeof(exercised) / sizeof(exercised[0]); i++) {
		const char *params[] = {exercised[i]};
		long n =
		    t_sql_long(db, "SELECT count(*) FROM pg_temp.seen WHERE what = $1", 1, params);
		cr_expect_geq(n, 20, "the cases tried \"%s\" only %ld times (all: %s)",
		              exercised[i], n, all);
	}
	free(all);
}

Test(register_people, same_outcomes_and_people_as_one_by_one, .timeout = 120)
{
	struct t_org org;
	t_org_new(&org);
	PGconn *db = t_db();
	char *fn = sequential_functions();
	exec_script(db, fn);
	free(fn);
	for (size_t i = 0; i < sizeof(generators) / sizeof(generators[0]); i++)
		PQclear(t_sql(db, generators[i], 0, NULL));
	PQclear(t_sql(db, twin_sessions, 0, NULL));
	PQclear(t_sql(db, record_seen, 0, NULL));
	const char *params[] = {org.id};
	PQclear(t_sql(db, "SELECT set_config('bulkreg_test.org', $1, false)", 1, params));
	/* Everything the cases write is rolled back once their results are read. */
	PQclear(t_sql(db, "BEGIN", 0, NULL));
	PQclear(t_sql(db, compare, 0, NULL));

	PGresult *res = t_sql(db, "SELECT count(*), min(trial) FROM pg_temp.mismatches", 0, NULL);
	long bad = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	if (bad > 0) {
		res = t_sql(
		    db,
		    "SELECT trial, setup, list, sequential, set, sequential_people, set_people"
		    " FROM pg_temp.mismatches ORDER BY trial LIMIT 1",
		    0, NULL);
		cr_expect_fail("%ld of " TRIALS " cases differ; the first (trial %s):\n  %s\n"
		               "  list: %s\n  one by one:    %s\n  session_apply: %s\n"
		               "  people one by one:    %s\n  people session_apply: %s",
		               bad, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
		               PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4),
		               PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 6));
		PQclear(res);
	}
	expect_exercised(db);
	PQclear(t_sql(db, "ROLLBACK", 0, NULL));
	PQfinish(db);
}

/* session_apply's entries, each as outcome:error_code, space separated. */
#define RESULTS_OF(call)                                                                  \
	"SELECT string_agg(format('%s:%s', r.outcome, r.error_code), ' ' ORDER BY r.ord)" \
	" FROM " call " r"

Test(register_people, closed_and_missing_sessions_fail_every_entry)
{
	struct t_org org;
	t_org_new(&org);
	PGconn *db = t_db();
	const char *params[] = {org.id};
	PGresult *res =
	    t_sql(db,
	          "WITH s AS (INSERT INTO sessions (organization_id, title, starts_at,"
	          "           registration_closes_at)"
	          " VALUES ($1, 'closed', now() + interval '1 day', now() - interval '1 minute')"
	          " RETURNING id)"
	          " SELECT string_agg(format('%s:%s:%s', r.outcome, r.error_code, r.person_id), ' '"
	          "                   ORDER BY r.ord)"
	          " FROM s, session_apply(s.id, '{register,register,register}',"
	          "   ARRAY['{\"email\":\"a@example.com\"}', '{\"email\":\"A@example.com\"}',"
	          "         '{\"external_id\":\"a\"}']::jsonb[],"
	          "   '{t,f,f}', '{f,f,f}', '{f,f,t}', ARRAY[NULL, NULL, NULL]::uuid[]) r",
	          1, params);
	cr_expect_str_eq(
	    PQgetvalue(res, 0, 0),
	    "failed:registration_closed: failed:registration_closed: failed:registration_closed:");
	PQclear(res);
	res = t_sql(
	    db,
	    RESULTS_OF("session_apply(gen_random_uuid(), '{register,cancel,approve}',"
	               "   ARRAY['{\"email\":\"a@example.com\"}', '{\"email\":\"a@example.com\"}',"
	               "         '{\"external_id\":\"a\"}']::jsonb[],"
	               "   '{f,f,f}', '{f,f,f}', '{f,f,f}', '{NULL,NULL,NULL}')"),
	    0, NULL);
	cr_expect_str_eq(PQgetvalue(res, 0, 0), "failed:session_not_found failed:session_not_found "
	                                        "failed:session_not_found");
	PQclear(res);
	cr_expect_eq(
	    t_sql_long(db,
	               "SELECT count(*) FROM people p JOIN sessions s ON s.id = p.session_id"
	               " WHERE s.organization_id = $1",
	               1, params),
	    0);
	PQfinish(db);
}

/*
 * The window binds registrations only: once it shuts, approve, deny and
 * cancel still apply (and a seat a cancellation frees still goes to the
 * waiting list), while a registration, also a cancelled person's anew,
 * fails registration_closed.
 */
Test(register_people, actions_are_not_bound_by_the_window)
{
	struct t_org org;
	t_org_new(&org);
	PGconn *db = t_db();
	char sid[37];
	t_session_sql(db, org.id, "window", sid);
	const char *p[] = {sid};
	PQclear(t_sql(db,
	              "UPDATE sessions SET capacity = 1, waitlist = true, approval = 'manual'"
	              " WHERE id = $1",
	              1, p));
	char *before = t_sql_text(
	    db,
	    RESULTS_OF("session_apply($1, '{register,register,register}',"
	               "   ARRAY['{\"email\":\"a@example.com\"}', '{\"external_id\":\"b\"}',"
	               "         '{\"email\":\"c@example.com\",\"external_id\":\"c\"}']::jsonb[],"
	               "   '{f,f,f}', '{f,f,f}', '{f,f,f}', '{NULL,NULL,NULL}')"),
	    1, p);
	cr_expect_str_eq(before, "succeeded: succeeded: succeeded:");
	free(before);
	PQclear(t_sql(db,
	              "UPDATE sessions SET registration_closes_at = now() - interval '1 second'"
	              " WHERE id = $1",
	              1, p));

	/*
	 * a approved, then cancelled: its seat goes to b (pending: manual
	 * approval), who is then denied; the seat goes on to c, who can then be
	 * approved.
	 */
	char *shut = t_sql_text(
	    db,
	    RESULTS_OF("session_apply($1, '{register,approve,cancel,deny,approve,register}',"
	               "   ARRAY['{\"email\":\"d@example.com\"}', '{\"email\":\"A@EXAMPLE.COM\"}',"
	               "         '{\"email\":\"a@example.com\",\"external_id\":null}',"
	               "         '{\"external_id\":\"b\"}', '{\"external_id\":\"c\"}',"
	               "         '{\"email\":\"a@example.com\"}']::jsonb[],"
	               "   '{f,f,f,f,f,t}', '{f,f,f,f,f,t}', '{f,f,f,f,f,f}',"
	               "   '{NULL,NULL,NULL,NULL,NULL,NULL}')"),
	    1, p);
	cr_expect_str_eq(shut,
	                 "failed:registration_closed succeeded: succeeded: succeeded: succeeded: "
	                 "failed:registration_closed",
	                 "%s", shut);
	free(shut);
	char *after = t_sql_text(db,
	                         "SELECT string_agg(coalesce(email, external_id) || ':' ||"
	                         "  registration_status, ' ' ORDER BY position) || ' | ' ||"
	                         "  (SELECT format('%s %s %s %s', registrants_count, pending_count,"
	                         "                 waitlist_count, people_count)"
	                         "   FROM sessions WHERE id = $1)"
	                         " FROM people WHERE session_id = $1",
	                         1, p);
	cr_expect_str_eq(after,
	                 "a@example.com:cancelled b:denied c@example.com:registered | 1 0 0 3",
	                 "%s", after);
	free(after);
	PQfinish(db);
}

/*
 * An action names its person by email (compared by email_key()), by
 * external_id (compared exactly) or by both, which must then be the same
 * person's; an entry naming neither names nobody.
 */
Test(register_people, an_action_names_one_person)
{
	struct t_org org;
	t_org_new(&org);
	PGconn *db = t_db();
	char sid[37];
	t_session_sql(db, org.id, "names", sid);
	const char *p[] = {sid};
	char *out = t_sql_text(
	    db,
	    RESULTS_OF("session_apply($1, '{register,register,cancel,cancel,cancel,cancel,cancel,"
	               "cancel}',"
	               "   ARRAY['{\"email\":\"a@example.com\"}', '{\"external_id\":\"b\"}', '{}',"
	               "         '{\"email\":null,\"external_id\":null}',"
	               "         '{\"email\":\"a@example.com\",\"external_id\":\"b\"}',"
	               "         '{\"external_id\":\"B\"}', '{\"email\":\"A@EXAMPLE.COM\"}',"
	               "         '{\"email\":\"a@example.com\"}']::jsonb[],"
	               "   '{f,f,f,f,f,f,f,f}', '{f,f,f,f,f,f,f,f}', '{f,f,f,f,f,f,f,f}',"
	               "   '{NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL}')"),
	    1, p);
	cr_expect_str_eq(out,
	                 "succeeded: succeeded: failed:person_not_found failed:person_not_found "
	                 "failed:person_not_found failed:person_not_found succeeded: "
	                 "failed:invalid_transition",
	                 "%s", out);
	free(out);
	cr_expect_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1"
	                        " AND registration_status = 'registered'",
	                        1, p),
	             1);
	PQfinish(db);
}
