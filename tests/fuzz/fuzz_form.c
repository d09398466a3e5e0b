/*
 * fuzz_form.c - libFuzzer harness for form bodies: common/http_form.c (the
 * fields libmicrohttpd's post processor reads from multipart/form-data and
 * application/x-www-form-urlencoded) and what Zoom's batch registration
 * makes of them (api/compat/zoom.h, zoom_batch_form).
 *
 * The input is a Content-Type value, a newline, then the body. The post
 * processor reads the Content-Type (and its boundary) from a live
 * connection, and a connection cannot be made without a daemon: the
 * harness runs one libmicrohttpd daemon without a listening socket, in
 * this thread, and hands it one end of a socket pair per input, on which
 * it writes a request head with that Content-Type. The access handler then
 * parses the input's body on that connection exactly as the server does
 * (http_form_parse). The body itself does not cross the socket: the code
 * under test is the parsing, not libmicrohttpd's HTTP reader.
 *
 * Checked: the bounds of a parsed form (fields, name lengths, bytes), that
 * each field is found by its name, that an accepted batch holds 1 to 30
 * registrants each with a valid email, and that a refusal's error document
 * is valid JSON with code 300. Memory errors, leaks and undefined
 * behaviour abort.
 */
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "compat/zoom.h"
#include "fz_support.h"
#include "http_form.h"
#include "validate.h"

#define FUZZ_MAX_BODY ((size_t)1 << 20)
#define FUZZ_CT_MAX   512
#define FUZZ_RUNS_MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input being run, for the access handler. */
static struct {
	const char *body;
	size_t len;
	bool parsed;
} cur;

static void check_batch(const http_form *f)
{
	size_t len = 0;
	const char *list = http_form_get(f, "registrants", &len);
	struct zoom_batch b = {NULL, false};
	struct zoom_problem p = {"", ""};
	if (zoom_batch_form(http_form_get(f, "auto_approve", NULL), list, len, &b, &p)) {
		size_t n = json_array_size(b.people);
		FZ_CHECK(n >= 1 && n <= ZOOM_MAX_REGISTRANTS);
		for (size_t i = 0; i < n; i++) {
			const json_t *email = json_object_get(json_array_get(b.people, i), "email");
			FZ_CHECK(json_is_string(email));
			FZ_CHECK(val_email(json_string_value(email), json_string_length(email)));
		}
		zoom_batch_free(&b);
		return;
	}
	FZ_CHECK(b.people == NULL);
	strbuf sb;
	sb_init(&sb, 4096);
	FZ_CHECK(zoom_error_doc(&sb, 300, "Validation Failed.", &p) == BR_OK);
	json_t *doc = json_loadb(sb_str(&sb), sb.len, 0, NULL);
	FZ_CHECK(doc != NULL);
	FZ_CHECK(json_integer_value(json_object_get(doc, "code")) == 300);
	json_decref(doc);
	sb_free(&sb);
}

static void check_form(struct MHD_Connection *conn)
{
	http_form *f = NULL;
	br_status st = http_form_parse(conn, cur.body, cur.len, FUZZ_MAX_BODY, &f);
	cur.parsed = true;
	if (st != BR_OK) {
		FZ_CHECK(st == BR_INVAL || st == BR_TOOBIG);
		FZ_CHECK(f == NULL);
		return;
	}
	int n = http_form_count(f);
	FZ_CHECK(n >= 0 && n <= HTTP_FORM_MAX_FIELDS);
	FZ_CHECK(http_form_bytes(f) <= FUZZ_MAX_BODY);
	for (int i = 0; i < n; i++) {
		const char *name = http_form_name(f, i);
		FZ_CHECK(name != NULL && strlen(name) <= HTTP_FORM_NAME_MAX);
		size_t len = SIZE_MAX;
		const char *v = http_form_get(f, name, &len);
		FZ_CHECK(v != NULL && len <= http_form_bytes(f) && v[len] == '\0');
		size_t ilen = SIZE_MAX;
		const char *iv = http_form_value(f, i, &ilen);
		FZ_CHECK(iv != NULL && ilen <= http_form_bytes(f) && iv[ilen] == '\0');
	}
	FZ_CHECK(http_form_get(f, "", NULL) == NULL || n > 0);
	check_batch(f);
	http_form_free(f);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	(void)cls;
	(void)url;
	(void)method;
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	if (!cur.parsed)
		check_form(conn);
	return MHD_NO; /* close the connection: nothing to answer */
}

static void quiet(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	(void)fmt;
	(void)ap;
}

static struct MHD_Daemon *daemon_get(void)
{
	static struct MHD_Daemon *d;
	if (!d)
		d = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG, 0, NULL, NULL,
		                     on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, quiet, NULL,
		                     MHD_OPTION_END);
	FZ_CHECK(d != NULL);
	return d;
}

static unsigned connections(struct MHD_Daemon *d)
{
	const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return i ? i->num_connections : 0;
}

/* A Content-Type value libmicrohttpd takes as a header: no controls. */
static bool header_ok(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] < 0x20 || s[i] == 0x7f)
			return false;
	}
	return n > 0 && s[0] != ' ';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size < FUZZ_CT_MAX ? size : FUZZ_CT_MAX);
	if (!nl || !header_ok(data, (size_t)(nl - data)) || size > FUZZ_MAX_BODY)
		return 0;
	size_t ctlen = (size_t)(nl - data);
	char head[FUZZ_CT_MAX + 128];
	int hn = snprintf(head, sizeof(head),
	                  "POST /f HTTP/1.1\r\nHost: f\r\nContent-Type: %.*s\r\n"
	                  "Content-Length: 0\r\n\r\n",
	                  (int)ctlen, (const char *)data);
	cur.body = (const char *)nl + 1;
	cur.len = size - ctlen - 1;
	cur.parsed = false;

	struct MHD_Daemon *d = daemon_get();
	int sv[2];
	FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	FZ_CHECK(write(sv[1], head, (size_t)hn) == hn);
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	FZ_CHECK(MHD_add_connection(d, sv[0], (struct sockaddr *)&peer, sizeof(peer)) == MHD_YES);
	for (int i = 0; i < FUZZ_RUNS_MAX && !cur.parsed; i++)
		FZ_CHECK(MHD_run(d) == MHD_YES);
	FZ_CHECK(cur.parsed); /* a head of printable bytes always reaches the handler */
	close(sv[1]);
	for (int i = 0; i < FUZZ_RUNS_MAX && connections(d) > 0; i++)
		FZ_CHECK(MHD_run(d) == MHD_YES);
	FZ_CHECK(connections(d) == 0);
	return 0;
}
