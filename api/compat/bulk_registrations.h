/*
 * bulk_registrations.h - the Bulk Registration Service compatible API
 * (docs/compat/bulk-registrations.md) under /api/v1/bulk-registrations: its
 * dialect (the error shape of every failure on its paths, dialect.h) and its
 * route functions, which the router's table names (routes.c).
 */
#ifndef BULKREG_API_COMPAT_BULK_REGISTRATIONS_H
#define BULKREG_API_COMPAT_BULK_REGISTRATIONS_H

#include "app.h"
#include "dialect.h"

extern const struct api_dialect compat_brs_dialect;

/* POST /api/v1/bulk-registrations (Idempotency-Key: ROUTE_IDEMPOTENT). */
void brs_create(struct api_req *r);
/* GET /api/v1/bulk-registrations?page=&limit=&status=&coordinator_id=&activity_type= */
void brs_list(struct api_req *r);
/* GET /api/v1/bulk-registrations/:id */
void brs_read(struct api_req *r);
/* PUT /api/v1/bulk-registrations/:id {"action":"retry_failed"} */
void brs_update(struct api_req *r);
/* DELETE /api/v1/bulk-registrations/:id */
void brs_delete(struct api_req *r);

#endif
