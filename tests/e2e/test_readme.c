/*
 * test_readme.c - README.md's walk-through runs as written and says what
 * happens. The shell blocks of its sections from "A walk through the API"
 * to "Compatible APIs" run in order, in one bash -e, against a real API and
 * worker, from a directory whose .local/env names them (as scripts/up
 * writes it); only the receiver's port is changed (a free one for 8099).
 * Every claim of a block's comments (a "# " line whose text starts with the
 * output itself: a JSON value, a quoted string, a number or an HTTP status
 * line, "…" standing for anything) must appear in the output, in order,
 * and the receiver must print the events the prose promises.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support.h"

#define README   BULKREG_SOURCE_DIR "/README.md"
#define FIRST    "## A walk through the API"
#define END      "## Controlling jobs"
#define RUN_MS   180000
#define OUT_SIZE (1 << 20)

static struct t_proc api, worker;
static struct t_org org;

static void setup(void)
{
	static const char *const env[] = {"BULKREG_WEBHOOK_ALLOW_PRIVATE=1", NULL};
	t_org_new(&org);
	t_api_start(&api, env);
	t_worker_start(&worker, env);
}

static void teardown(void)
{
	t_proc_stop(&worker, SIGTERM, 20000);
	t_proc_stop(&api, SIGTERM, 20000);
}

TestSuite(readme, .init = setup, .fini = teardown, .timeout = 300);

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s", path);
	char *text = calloc(1, OUT_SIZE);
	cr_assert_not_null(text);
	size_t n = fread(text, 1, OUT_SIZE - 1, f);
	fclose(f);
	text[n] = '\0';
	return text;
}

/*
 * Appends to script the sh blocks of README between FIRST and END, with
 * the receiver on port instead of 8099 and printing into receiver.log (its
 * output must not hold the pipe the test reads until it closes).
 */
static void blocks(const char *readme, FILE *script, int port)
{
	static const char receiver[] = "serve_forever()' &";
	const char *from = strstr(readme, FIRST), *to = strstr(readme, END);
	cr_assert(from && to && from < to, "README.md has no \"%s\" ... \"%s\"", FIRST, END);
	int n = 0, receivers = 0;
	for (const char *b = strstr(from, "```sh\n"); b && b < to; b = strstr(b, "```sh\n")) {
		b += 6;
		const char *e = strstr(b, "```");
		cr_assert_not_null(e);
		for (const char *p = b; p < e; p++) {
			if (strncmp(p, "8099", 4) == 0) {
				fprintf(script, "%d", port);
				p += 3;
			} else if (strncmp(p, receiver, sizeof(receiver) - 1) == 0) {
				fputs("serve_forever()' > receiver.log 2>&1 &", script);
				p += sizeof(receiver) - 2;
				receivers++;
			} else {
				fputc(*p, script);
			}
		}
		b = e + 3;
		n++;
	}
	cr_assert_gt(n, 5, "only %d shell blocks", n);
	cr_assert_eq(receivers, 1, "the README starts %d receivers", receivers);
}

/*
 * The output a comment line claims, into out: its text up to where prose
 * starts ("; " or ": " after the value). Empty when the line is prose.
 */
static void claim_of(const char *line, size_t len, char *out, size_t cap)
{
	out[0] = '\0';
	if (len == 0 || !(line[0] == '{' || line[0] == '"' || (line[0] >= '0' && line[0] <= '9') ||
	                  strncmp(line, "HTTP/", 5) == 0))
		return;
	size_t n = len;
	for (size_t i = 1; i + 1 < len; i++) {
		if ((line[i - 1] == '"' || line[i - 1] == '}') &&
		    (line[i] == ';' || line[i] == ':') && line[i + 1] == ' ') {
			n = i;
			break;
		}
	}
	snprintf(out, cap, "%.*s", (int)n, line);
}

/* Whether s matches pattern, where "…" stands for any text. */
static bool matches(const char *s, const char *pattern)
{
	const char *dots = strstr(pattern, "…");
	if (!dots)
		return strcmp(s, pattern) == 0;
	size_t head = (size_t)(dots - pattern);
	if (strncmp(s, pattern, head) != 0)
		return false;
	const char *rest = dots + strlen("…");
	for (const char *p = s + head;; p++) {
		if (matches(p, rest))
			return true;
		if (!*p)
			return false;
	}
}

/* Finds a line matching claim at or after *at; moves *at past it. */
static bool find_line(const char **at, const char *claim)
{
	for (const char *l = *at; *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		char line[1024];
		snprintf(line, sizeof(line), "%.*s", (int)(len < 1023 ? len : 1023), l);
		if (len > 0 && line[len - 1] == '\r')
			line[len - 1] = '\0';
		if (matches(line, claim)) {
			*at = nl ? nl + 1 : l + len;
			return true;
		}
		if (!nl)
			break;
		l = nl + 1;
	}
	return false;
}

/* Every claim of the README's comments, in order, in out. */
static void check_claims(const char *readme, const char *out)
{
	const char *from = strstr(readme, FIRST), *to = strstr(readme, END);
	const char *at = out;
	int checked = 0;
	for (const char *l = strstr(from, "\n# "); l && l < to; l = strstr(l + 1, "\n# ")) {
		const char *text = l + 3, *nl = strchr(text, '\n');
		char claim[512];
		claim_of(text, nl ? (size_t)(nl - text) : strlen(text), claim, sizeof(claim));
		if (!claim[0])
			continue;
		cr_expect(find_line(&at, claim),
		          "README claims \"%s\"; the output (after the "
		          "previous claim) does not show it",
		          claim);
		checked++;
	}
	cr_expect_geq(checked, 10, "only %d claims found in the README", checked);
}

Test(readme, the_walk_through_runs_as_written)
{
	char dir[128], path[256];
	snprintf(dir, sizeof(dir), "/tmp/bulkreg-readme-%ld-%lld", (long)getpid(), t_now_ms());
	cr_assert_eq(mkdir(dir, 0700), 0, "mkdir %s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/.local", dir);
	cr_assert_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/.local/env", dir);
	FILE *env = fopen(path, "w");
	cr_assert_not_null(env);
	fprintf(env, "export API_URL='%s'\nexport BULKREG_TOKEN='%s'\n", api.url, org.token);
	fclose(env);

	char *readme = slurp(README);
	int port = t_free_port();
	snprintf(path, sizeof(path), "%s/walk.sh", dir);
	FILE *script = fopen(path, "w");
	cr_assert_not_null(script);
	fprintf(script, "set -e\ncd '%s'\n", dir);
	blocks(readme, script, port);
	/* The receiver runs in the background: wait for its events, then stop it. */
	fputs("for i in $(seq 100); do\n"
	      "  grep -q person.updated receiver.log 2>/dev/null && break\n"
	      "  sleep 0.1\n"
	      "done\n"
	      "kill $(jobs -p) 2>/dev/null || true\n",
	      script);
	fclose(script);
	const char *args[] = {path, NULL};
	char *out = calloc(1, OUT_SIZE), *err = calloc(1, 1 << 16);
	cr_assert(out && err);
	int rc = t_run("/bin/bash", args, NULL, out, OUT_SIZE, err, 1 << 16, RUN_MS);
	cr_assert_eq(rc, 0, "the walk-through failed (%d): %s\n--- output ---\n%s", rc, err, out);
	check_claims(readme, out);

	/* The prose: the job ends failed, 2 successes and 1 failure; one job.ended arrives. */
	cr_expect_not_null(strstr(out, "\"status\": \"failed\""), "%s", out);
	cr_expect_not_null(strstr(out, "\"total_success\": 2"), "%s", out);
	cr_expect_not_null(strstr(out, "\"total_fail\": 1"), "%s", out);
	snprintf(path, sizeof(path), "%s/receiver.log", dir);
	char *hooks = slurp(path);
	/* The first job's one job.ended (later jobs end too), and the approval's person.updated. */
	int ended = 0;
	for (const char *l = hooks; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		const char *nl = strchr(l, '\n');
		char line[4096];
		snprintf(line, sizeof(line), "%.*s", (int)(nl ? nl - l : (long)strlen(l)), l);
		ended +=
		    strstr(line, "\"job.ended\"") && strstr(line, "\"action\" : \"register\"") &&
		    strstr(line, "\"total_success\" : 2") && strstr(line, "\"total_fail\" : 1");
	}
	cr_expect_eq(ended, 1, "%d job.ended events of the first job; receiver: %s", ended, hooks);
	cr_expect_not_null(strstr(hooks, "\"previous_status\" : \"pending_approval\""),
	                   "receiver: %s", hooks);
	free(hooks);
	free(out);
	free(err);
	free(readme);
}
