/*
 * uuid.c - the UUID text validator (see uuid.h). Stateless; thread-safe.
 */
#include "uuid.h"

bool uuid_valid(const char *s, size_t len, enum uuid_case allowed)
{
	if (len != UUID_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		           (allowed == UUID_ANY_CASE && c >= 'A' && c <= 'F');
		if (dash ? c != '-' : !hex)
			return false;
	}
	return true;
}
