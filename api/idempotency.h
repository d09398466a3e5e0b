/*
 * idempotency.h - the Idempotency-Key header (docs/openapi.yaml Bulk
 * registration), applied by the router around a route function so routes
 * stay unaware of it.
 *
 * A key is 1 to 255 printable ASCII characters (space included), scoped to
 * the organization; anything else is 400 invalid_parameter (a malformed
 * header is a bad request parameter, as Stripe answers it, not a problem
 * with the body). The request's fingerprint is SHA-256 over the method, the
 * path and SHA-256 of the raw body bytes: a retry must resend the same
 * bytes. A form body (multipart/form-data, whose boundary a client may draw
 * anew for each request) is fingerprinted by its fields instead.
 *
 * Records live in the idempotency_keys table (sql/migrations/001_baseline.sql), one row
 * per (organization, key), written in the same transaction as what the
 * route writes, together with the response. Rows older than 24 h count as
 * absent.
 *
 * Stateless apart from a process-wide "last purge" time (atomic);
 * thread-safe.
 */
#ifndef BULKREG_API_IDEMPOTENCY_H
#define BULKREG_API_IDEMPOTENCY_H

#include "app.h"

#define IDEM_KEY_MAX 255

/*
 * Runs fn(r) under the request's Idempotency-Key, or plainly when the
 * request has none:
 * - first use of the key: opens a transaction on r->db, runs fn in it,
 *   then records the response (status, body, Location) and commits, when
 *   the status is below 500; a 5xx rolls back and leaves the key free;
 * - same key and fingerprint with a recorded response: replays that
 *   response (with Idempotent-Replayed: true) without running fn;
 * - same key, another fingerprint: 422 idempotency_key_reused;
 * - same key while the first request's transaction is open: 409
 *   idempotency_key_in_use, with Retry-After.
 * So fn's statements must not commit on their own, and anything to do
 * after the commit goes through jobs_defer_publish (jobs.h). No
 * transaction is left open on r->db. A commit that fails answers 503.
 */
void idem_run(struct api_req *r, void (*fn)(struct api_req *r));

/* True when key is an acceptable Idempotency-Key value. */
bool idem_key_valid(const char *key);

#endif
