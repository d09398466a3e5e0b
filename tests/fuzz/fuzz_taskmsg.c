/*
 * fuzz_taskmsg.c - libFuzzer harness for task message bodies
 * (common/taskmsg.h): the input is a message body as the broker delivers
 * it, unterminated, to taskmsg_parse.
 *
 * Checks: an accepted body yields a canonical lower-case UUID, NUL-
 * terminated, that appears in the body; the body taskmsg_encode writes for
 * that id parses back to the same id. The output buffer is exactly
 * UUID_LEN + 1 bytes on the heap so that ASan sees any overrun.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_support.h"
#include "taskmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly size bytes: a read past the body is an ASan report. */
	char *body = malloc(size ? size : 1);
	char *id = malloc(UUID_LEN + 1);
	FZ_CHECK(body && id);
	if (size)
		memcpy(body, data, size);
	if (taskmsg_parse(body, size, id) == BR_OK) {
		FZ_CHECK(id[UUID_LEN] == '\0');
		FZ_CHECK(taskmsg_is_uuid(id, strlen(id)));
		FZ_CHECK(size <= 4096);

		char msg[TASKMSG_MAX], again[UUID_LEN + 1];
		size_t n = taskmsg_encode(id, id, msg);
		FZ_CHECK(n > 0 && n < TASKMSG_MAX);
		FZ_CHECK(taskmsg_parse(msg, n, again) == BR_OK);
		FZ_CHECK(memcmp(id, again, UUID_LEN + 1) == 0);
	}
	free(id);
	free(body);
	return 0;
}
