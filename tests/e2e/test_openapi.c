/*
 * test_openapi.c - docs/openapi.yaml describes the server as a client sees
 * it. tests/openapi/check_live.js (Node.js; scripts/test installs its
 * packages with npm ci) validates the document, then calls every operation
 * it lists against a real API and worker, success and error answers alike,
 * and checks each answer's status, media type and body against the
 * document. An operation the scenario never reached, or an answer the
 * document does not describe, fails the test.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support.h"

#define CHECKER BULKREG_SOURCE_DIR "/tests/openapi/check_live.js"
#define SPEC    BULKREG_SOURCE_DIR "/docs/openapi.yaml"
#define MODULES BULKREG_SOURCE_DIR "/tests/openapi/node_modules"
#define RUN_MS  240000
#define OUT_CAP (1 << 20)

static struct t_proc api, worker;
static struct t_org org;

static void setup(void)
{
	t_org_new(&org);
	t_api_start(&api, NULL);
	t_worker_start(&worker, NULL);
}

static void teardown(void)
{
	t_proc_stop(&worker, SIGTERM, 20000);
	t_proc_stop(&api, SIGTERM, 20000);
}

TestSuite(openapi, .init = setup, .fini = teardown, .timeout = 300);

Test(openapi, every_live_answer_matches_the_document)
{
	cr_assert(access(MODULES, F_OK) == 0,
	          "%s is missing: run npm ci --prefix tests/openapi (scripts/test does)", MODULES);
	char url_env[128], token_env[128];
	snprintf(url_env, sizeof(url_env), "API_URL=%s", api.url);
	snprintf(token_env, sizeof(token_env), "BULKREG_TOKEN=%s", org.token);
	const char *const env[] = {url_env, token_env, NULL};
	const char *const args[] = {"node", CHECKER, SPEC, NULL};
	char *out = calloc(1, OUT_CAP), *err = calloc(1, 1 << 16);
	cr_assert(out && err);
	int rc = t_run("/usr/bin/env", args, env, out, OUT_CAP, err, 1 << 16, RUN_MS);
	fputs(out, stderr);
	fputs(err, stderr);
	cr_assert_eq(rc, 0, "check_live.js exited %d: the answers above do not match %s", rc, SPEC);
	cr_assert_not_null(strstr(out, "; 0 problems"), "no verdict from check_live.js");
	free(out);
	free(err);
}
