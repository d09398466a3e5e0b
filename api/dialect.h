/*
 * dialect.h - how a family of routes answers a failure. The native /v1
 * routes answer JSON:API error documents (jsonapi.h); each compatible API
 * (api/compat/, docs/compat/) answers in its own error shape: its
 * dialect. The router picks the dialect by path prefix before anything
 * else, so every failure on the way (401, 429, 404, 405, 400, 503) comes
 * in the shape the client expects, through the same ja_fail() the native
 * routes call.
 */
#ifndef BULKREG_API_DIALECT_H
#define BULKREG_API_DIALECT_H

#include "app.h"

struct api_dialect {
	const char *prefix; /* the paths it answers for, e.g. "/api/v1/workshops/" */
	/*
	 * Answers r with a failure: the HTTP status, the native error code
	 * (docs/openapi.yaml: unauthorized, not_found, rate_limited, ...) and a
	 * human detail. Sets the response's status, body and content type;
	 * headers already set (Retry-After, Allow, RateLimit-*) stay.
	 */
	void (*fail)(struct api_req *r, unsigned status, const char *code, const char *detail);
};

#endif
