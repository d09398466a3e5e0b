/*
 * workshops.h - a workshop booking API's guest registration, served by
 * bulkreg (docs/compat/workshops.md):
 * POST /api/v1/workshops/:workshop_id/registrations, where workshop_id is a
 * session's id. A translation layer over the native single registration.
 */
#ifndef BULKREG_API_COMPAT_WORKSHOPS_H
#define BULKREG_API_COMPAT_WORKSHOPS_H

#include "app.h"
#include "dialect.h"

/*
 * The dialect of the paths under /api/v1/workshops/: every failure, the
 * router's included (401, 404, 405, 415, 429, 503, malformed JSON), is
 * answered as {"code": N, "message": "..."} with the codes of
 * docs/compat/workshops.md.
 */
extern const struct api_dialect compat_workshop_dialect;

/*
 * POST /api/v1/workshops/:id/registrations: registers one guest in the
 * session r->id through register_one() (sql/functions/lifecycle.sql), the
 * statement of POST /v1/sessions/:id/people, and answers 201
 * {"registrations": {"id", "status"}} or the workshop API's error. Runs on
 * the router's connection r->db; nothing to free.
 */
void compat_workshop_register(struct api_req *r);

#endif
