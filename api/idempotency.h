/*
 * idempotency.h - the Idempotency-Key header (CONTRACT §5 Bulk
 * registration), applied by the router around a route function so routes
 * stay unaware of it.
 *
 * A key is 1 to 255 printable ASCII characters (space included), scoped to
 * the organization; anything else is 400 invalid_parameter (a malformed
 * header is a bad request parameter, as Stripe answers it, not a problem
 * with the body). The request's fingerprint is SHA-256 over the method, the
 * path and SHA-256 of the raw body bytes: a retry must resend the same
 * bytes.
 *
 * Records live in the idempotency_keys table (sql/001_schema.sql), one row
 * per (organization, key); the primary key decides which of two concurrent
 * requests runs. A row with a NULL response_status is in flight. Rows older
 * than 24 h count as absent; an in-flight row older than IDEM_STALE_S (its
 * API process died) may be taken over by a retry.
 *
 * Stateless apart from a process-wide "last purge" time (atomic);
 * thread-safe.
 */
#ifndef BULKREG_API_IDEMPOTENCY_H
#define BULKREG_API_IDEMPOTENCY_H

#include "app.h"

#define IDEM_KEY_MAX 255
/* An in-flight record this old belongs to a request that can no longer be running. */
#define IDEM_STALE_S 300

/*
 * Runs fn(r) under the request's Idempotency-Key, or plainly when the
 * request has none:
 * - first use of the key: records it in flight, runs fn, then stores the
 *   response (status, body, Location) when the status is below 500, or
 *   forgets the key on a 5xx so that a retry can run;
 * - same key and fingerprint with a stored response: replays that response
 *   (with Idempotent-Replayed: true) without running fn;
 * - same key, another fingerprint: 422 idempotency_key_reused;
 * - same key while the first request is in flight: 409
 *   idempotency_key_in_use.
 * Uses r->db between statements of its own (autocommit, no transaction
 * left open). Database failures before fn runs answer 503/500 and fn does
 * not run.
 */
void idem_run(struct api_req *r, void (*fn)(struct api_req *r));

/* True when key is an acceptable Idempotency-Key value. */
bool idem_key_valid(const char *key);

#endif
