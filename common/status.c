/*
 * status.c - names and messages of br_status. Immutable tables: thread-safe.
 */
#include "status.h"

#include <stddef.h>

static const char *const messages[] = {
#define BR_STATUS_MSG(name, msg) [BR_##name] = msg,
    BR_STATUS_MAP(BR_STATUS_MSG)
#undef BR_STATUS_MSG
};

static const char *const names[] = {
#define BR_STATUS_NAME(name, msg) [BR_##name] = #name,
    BR_STATUS_MAP(BR_STATUS_NAME)
#undef BR_STATUS_NAME
};

const char *br_strerror(br_status st)
{
	if ((int)st < 0 || st >= BR_STATUS_COUNT_)
		return "unknown status";
	return messages[st];
}

const char *br_status_name(br_status st)
{
	if ((int)st < 0 || st >= BR_STATUS_COUNT_)
		return "UNKNOWN";
	return names[st];
}
