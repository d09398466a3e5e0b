/*
 * http_layer.c - the HTTP library's own refusals, as JSON:API documents.
 *
 * libmicrohttpd answers by itself the requests it cannot parse, before any
 * handler sees them or while it reads their body: a request line or header
 * block larger than the connection's buffer (414, 431), a malformed
 * Content-Length or chunk (400, 413), an HTTP version other than 1.0 or 1.1
 * (505, e.g. an HTTP/2 preface). Its connection.c
 * (transmit_error_response_len) queues a fixed HTML page, or an empty body,
 * with MHD_queue_response(), and Debian 12's 0.9.75 has no option to replace
 * it. (After a malformed Content-Length it even sends the status line and
 * headers twice, so the client reads them as the body.)
 *
 * The library makes that call through its PLT, so the definition of
 * MHD_queue_response below, in the executable, is the one it reaches (the
 * dynamic linker looks in the executable first). A call whose return
 * address lies inside libmicrohttpd is such a refusal: the answer, with the
 * same status and a JSON:API error document, is written to the socket here
 * (nothing of this request has been sent, and the previous response of a
 * kept-alive connection was complete before its next request was read),
 * the connection is set to linger (http_conns.h) so that a client still
 * sending reads it, and MHD_NO makes the library close the connection
 * without writing anything of its own. Every other call (ours, or a test's
 * own server) goes to the library's function unchanged.
 */
#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "http.h"
#include "http_conns.h"
#include "log.h"

/* How long the refusal may wait for room in the socket's send buffer. */
#define REFUSAL_SEND_MS 1000

typedef enum MHD_Result (*queue_fn)(struct MHD_Connection *, unsigned int, struct MHD_Response *);

static queue_fn library_queue;           /* libmicrohttpd's MHD_queue_response */
static uintptr_t library_lo, library_hi; /* its loaded segments span [lo, hi) */
static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;

/* dl_iterate_phdr callback: the span of the object loaded at *base. */
static int find_span(struct dl_phdr_info *info, size_t size, void *base)
{
	(void)size;
	if ((const void *)info->dlpi_addr != *(const void **)base)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD)
			continue;
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
		if (!library_lo || lo < library_lo)
			library_lo = lo;
		if (hi > library_hi)
			library_hi = hi;
	}
	return 1;
}

static void resolve(void)
{
	Dl_info info;
	void *sym = dlsym(RTLD_NEXT, "MHD_queue_response");
	memcpy(&library_queue, &sym, sizeof(library_queue));
	if (sym && dladdr(sym, &info))
		dl_iterate_phdr(find_span, &info.dli_fbase);
}

bool http_layer_json(void)
{
	pthread_once(&resolve_once, resolve);
	/* The library reaches this definition only if the executable exports it. */
	void *seen = dlsym(RTLD_DEFAULT, "MHD_queue_response");
	queue_fn ours = MHD_queue_response;
	return library_hi && memcmp(&seen, &ours, sizeof(seen)) == 0;
}

/* Whether code at addr belongs to libmicrohttpd (two comparisons: every response passes here). */
static bool from_library(const void *addr)
{
	return (uintptr_t)addr >= library_lo && (uintptr_t)addr < library_hi;
}

struct refusal {
	unsigned status;
	const char *code, *title, *detail;
};

static const struct refusal refusals[] = {
    {400, "malformed_request", "Malformed request",
     "The request is not valid HTTP/1.1 (request line, a header, Content-Length or the chunked "
     "body)."},
    {413, "payload_too_large", "Payload too large", "The request body is too large."},
    {414, "uri_too_long", "URI too long", "The request line is longer than the server accepts."},
    {431, "header_fields_too_large", "Request header fields too large",
     "The request's header fields are larger than the server accepts."},
    {505, "http_version_not_supported", "HTTP version not supported",
     "Only HTTP/1.0 and HTTP/1.1 are served."},
};

static const struct refusal *refusal_of(unsigned status)
{
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		if (refusals[i].status == status)
			return &refusals[i];
	}
	return NULL;
}

/* The whole answer refusing a request with status, into out; its length, or 0. */
static size_t refusal_text(unsigned status, char *out, size_t cap)
{
	const struct refusal *r = refusal_of(status);
	char body[512];
	int n =
	    snprintf(body, sizeof(body),
	             "{\"errors\":[{\"status\":\"%u\",\"code\":\"%s\",\"title\":\"%s\","
	             "\"detail\":\"%s\"}]}",
	             status, r ? r->code : "malformed_request", r ? r->title : "Request refused",
	             r ? r->detail : "The HTTP server refused the request.");
	if (n < 0 || (size_t)n >= sizeof(body))
		return 0;
	const char *reason = MHD_get_reason_phrase_for(status);
	char date[64];
	struct tm tm;
	time_t now = time(NULL);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
	int len = snprintf(out, cap,
	                   "HTTP/1.1 %u %s\r\nDate: %s\r\nConnection: close\r\n"
	                   "Content-Type: application/vnd.api+json\r\nContent-Length: %d\r\n\r\n%s",
	                   status, reason && *reason ? reason : "Error", date, n, body);
	return len > 0 && (size_t)len < cap ? (size_t)len : 0;
}

/* Writes all of buf to the non-blocking socket fd, waiting a little for room. */
static bool send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			if (poll(&p, 1, REFUSAL_SEND_MS) <= 0)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* Answers the library's refusal of conn's request with status itself. */
static bool refuse(struct MHD_Connection *conn, unsigned status)
{
	char text[1024];
	size_t len = refusal_text(status, text, sizeof(text));
	const union MHD_ConnectionInfo *fd =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (!len || !fd)
		return false;
	LOG_DEBUG("request refused by the HTTP layer with %u", status);
	(void)send_all(fd->connect_fd, text, len);
	const union MHD_ConnectionInfo *ctx =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (ctx && ctx->socket_context)
		hc_linger(ctx->socket_context);
	return true;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
                                   struct MHD_Response *response)
{
	pthread_once(&resolve_once, resolve);
	if (!library_queue)
		return MHD_NO;
	if (!from_library(__builtin_return_address(0)) || !refuse(connection, status_code))
		return library_queue(connection, status_code, response);
	return MHD_NO; /* the library closes the connection, writing nothing */
}
