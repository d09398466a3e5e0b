/*
 * webhook.h - what the API and the deliverer share about webhooks:
 * Standard Webhooks signing (https://www.standardwebhooks.com/), endpoint
 * secrets, and the policy on where a webhook may be sent.
 *
 * The URL policy has two halves. wh_url_check runs when an endpoint is
 * registered: the URL must be http(s) with a host, and (unless private
 * targets are allowed) every address the host resolves to must be public.
 * wh_addr_class / wh_addr_allowed classify one address without any DNS;
 * the deliverer calls them on the address it is about to connect to, so a
 * name that resolves to something else later (DNS rebinding) is still
 * refused.
 *
 * Stateless and thread-safe.
 */
#ifndef BULKREG_WEBHOOK_H
#define BULKREG_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include <sys/socket.h>

#include "status.h"

#define WH_SECRET_PREFIX "whsec_"
#define WH_SECRET_BYTES  32
/* "whsec_" + base64 of 32 bytes (44 characters) + NUL. */
#define WH_SECRET_SIZE (6 + 44 + 1)
/* Longest secret key wh_sign accepts, decoded. */
#define WH_SECRET_MAX_BYTES 64
/* "v1," + base64 of an HMAC-SHA256 (44 characters) + NUL. */
#define WH_SIGNATURE_SIZE (3 + 44 + 1)
#define WH_URL_MAX        2048

/* Writes a new "whsec_<base64 of 32 random bytes>" to out; BR_CRYPTO on failure. */
br_status wh_secret_new(char out[WH_SECRET_SIZE]) BR_MUST_USE;

/*
 * Decodes a "whsec_<base64>" secret into its key bytes. BR_INVAL when the
 * prefix or the base64 is wrong, or the key is empty or longer than
 * keycap. *keylen is written only on success.
 */
br_status wh_secret_decode(const char *secret, unsigned char *key, size_t keycap,
                           size_t *keylen) BR_MUST_USE;

/*
 * The webhook-signature header value for one attempt:
 * "v1,<base64 HMAC-SHA256(key, msg_id "." timestamp "." body)>", where key
 * is the decoded secret. BR_INVAL for a bad secret, BR_TOOBIG when outcap
 * is under WH_SIGNATURE_SIZE, BR_NOMEM, BR_CRYPTO. out is written only on
 * success.
 */
br_status wh_sign(const char *secret, const char *msg_id, long timestamp, const char *body,
                  size_t len, char *out, size_t outcap) BR_MUST_USE;

/*
 * Why an address may not be a webhook target: a static name such as
 * "loopback", "private" or "link-local", or NULL when it is public (or of a
 * family other than IPv4/IPv6, which is refused as "unsupported family").
 * IPv6 addresses that embed an IPv4 one (mapped, compatible, NAT64, 6to4)
 * are judged by the embedded address. No DNS, no allocation.
 */
const char *wh_addr_class(const struct sockaddr *sa);

/* True when wh_addr_class(sa) is NULL. */
bool wh_addr_allowed(const struct sockaddr *sa);

/*
 * Checks a webhook URL: http:// or https:// with a host, at most
 * WH_URL_MAX characters. An internationalized host (bücher.example) is
 * converted to punycode (xn--bcher-kva.example), which is what is resolved,
 * stored and delivered to. Unless allow_private, the host is resolved and
 * every address must be allowed by wh_addr_allowed; a host that does not
 * resolve is refused too. On success *out receives the URL to store (as
 * given, or with its host in punycode), which the caller frees with free().
 * On refusal returns BR_INVAL with a sentence for the client in why;
 * BR_NOMEM when out of memory. *out is written only on success. Blocks for
 * DNS.
 */
br_status wh_url_check(const char *url, bool allow_private, char **out, char *why,
                       size_t whylen) BR_MUST_USE;

#endif
