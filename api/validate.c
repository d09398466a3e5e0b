/*
 * validate.c - request-body validation (see validate.h). No state.
 */
#include "validate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VAL_PTR_MAX 256

/*
 * Adds a 422 validation_failed problem at pointer, or at pointer + "/" +
 * key. The pointer is exact however long the key: a key that does not fit
 * the stack buffer gets a heap one.
 */
static void problem(struct ja_errors *e, const char *pointer, const char *key, const char *detail)
{
	char small[VAL_PTR_MAX];
	char *ptr = small;
	size_t cap = sizeof(small);
	if (key) {
		/* Each key byte becomes at most two ("~0", "~1"). */
		size_t need = strlen(pointer) + 2 * strlen(key) + 4;
		if (need > cap) {
			char *big = malloc(need);
			if (big) {
				ptr = big;
				cap = need;
			}
		}
		ja_pointer(ptr, cap, pointer, key);
	} else {
		snprintf(ptr, cap, "%s", pointer);
	}
	ja_error_add(e, 422, "validation_failed", "Validation failed", detail, ptr);
	if (ptr != small)
		free(ptr);
}

void val_unknown(struct ja_errors *e, const char *pointer, const char *key, const char *what)
{
	/* The detail names at most 100 bytes of the key, cut between characters. */
	size_t len = strlen(key), n = len;
	if (n > 100) {
		n = 100;
		while (n > 0 && ((unsigned char)key[n] & 0xc0) == 0x80)
			n--;
	}
	char detail[192];
	snprintf(detail, sizeof(detail), "Unknown %.20s %.*s%s.", what, (int)n, key,
	         n < len ? "..." : "");
	problem(e, pointer, key, detail);
}

/* An optional string of at most max characters (null counts as absent). */
static void check_string(const json_t *attrs, const char *key, size_t max, const char *pointer,
                         struct ja_errors *e)
{
	const json_t *v = json_object_get(attrs, key);
	char detail[96];
	if (!v || json_is_null(v))
		return;
	if (!json_is_string(v)) {
		snprintf(detail, sizeof(detail), "%s must be a string.", key);
		problem(e, pointer, key, detail);
	} else if (val_utf8_len(json_string_value(v), json_string_length(v)) > max) {
		snprintf(detail, sizeof(detail), "%s must be at most %zu characters.", key, max);
		problem(e, pointer, key, detail);
	} else if (memchr(json_string_value(v), '\0', json_string_length(v))) {
		snprintf(detail, sizeof(detail), "%s must not contain NUL characters.", key);
		problem(e, pointer, key, detail);
	}
}

static bool field_value_ok(const json_t *v)
{
	if (json_is_string(v))
		return json_string_length(v) <= VAL_FIELD_VAL_MAX &&
		       !memchr(json_string_value(v), '\0', json_string_length(v));
	if (!json_is_array(v) || json_array_size(v) > VAL_FIELDS_MAX)
		return false;
	size_t i;
	const json_t *m;
	json_array_foreach(v, i, m)
	{
		if (!json_is_string(m) || json_string_length(m) > VAL_FIELD_VAL_MAX ||
		    memchr(json_string_value(m), '\0', json_string_length(m)))
			return false;
	}
	return true;
}

static void check_fields(const json_t *fields, const char *pointer, struct ja_errors *e)
{
	char ptr[VAL_PTR_MAX];
	snprintf(ptr, sizeof(ptr), "%.200s/fields", pointer);
	/* null is refused, not taken for []: the database would store it as a JSON null. */
	if (!fields)
		return;
	if (!json_is_array(fields)) {
		problem(e, ptr, NULL, "fields must be an array.");
		return;
	}
	if (json_array_size(fields) > VAL_FIELDS_MAX) {
		problem(e, ptr, NULL, "fields may hold at most 50 entries.");
		return;
	}
	size_t i;
	const json_t *f;
	json_array_foreach(fields, i, f)
	{
		char fp[VAL_PTR_MAX];
		snprintf(fp, sizeof(fp), "%.220s/%zu", ptr, i);
		const json_t *id = json_object_get(f, "id");
		if (!json_is_object(f) || json_object_size(f) != 2 || !json_is_string(id) ||
		    json_string_length(id) == 0 ||
		    val_utf8_len(json_string_value(id), json_string_length(id)) > VAL_NAME_MAX ||
		    !json_object_get(f, "value")) {
			problem(
			    e, fp, NULL,
			    "Each field is {\"id\": \"...\", \"value\": \"...\" or [\"...\"]}.");
			continue;
		}
		if (!field_value_ok(json_object_get(f, "value")))
			problem(e, fp, "value",
			        "A field value is a string or an array of strings (at most 4096 "
			        "characters each).");
	}
}

static const char *const person_keys[] = {"email",    "external_id",  "first_name",  "last_name",
                                          "fields",   "referrer",     "utm_source",  "utm_medium",
                                          "utm_term", "utm_campaign", "utm_content", "reference",
                                          "track_id", "center_id",    NULL};
/* A bulk action's task names a person and may carry the client's reference. */
static const char *const named_keys[] = {"email", "external_id", "reference", NULL};
static const char *const statuses[] = {"registered", "waitlisted", "pending_approval",
                                       "denied",     "cancelled",  NULL};

static bool known(const char *const *keys, const char *key)
{
	for (; *keys; keys++) {
		if (strcmp(*keys, key) == 0)
			return true;
	}
	return false;
}

/* email and external_id: each valid when given; one of them when mode needs it. */
static void check_identity(const json_t *attrs, enum val_person_mode mode, const char *pointer,
                           struct ja_errors *e)
{
	const json_t *email = json_object_get(attrs, "email");
	const json_t *ext = json_object_get(attrs, "external_id");
	bool has_email = email && !json_is_null(email), has_ext = ext && !json_is_null(ext);
	if (has_email && (!json_is_string(email) ||
	                  !val_email(json_string_value(email), json_string_length(email))))
		problem(e, pointer, "email", "email must be a valid e-mail address.");
	if (has_ext && (!json_is_string(ext) || json_string_length(ext) == 0))
		problem(e, pointer, "external_id", "external_id must be a non-empty string.");
	else
		check_string(attrs, "external_id", VAL_NAME_MAX, pointer, e);
	if (mode != VAL_PERSON_PATCH && !has_email && !has_ext)
		problem(e, pointer, "email", "email or external_id is required.");
}

/* registration_status, only in a PATCH: one of the statuses. */
static void check_status(const json_t *attrs, const char *pointer, struct ja_errors *e)
{
	const json_t *v = json_object_get(attrs, "registration_status");
	if (v && (!json_is_string(v) || !known(statuses, json_string_value(v))))
		problem(e, pointer, "registration_status",
		        "registration_status must be registered, waitlisted, pending_approval, "
		        "denied or cancelled.");
}

bool val_person(const json_t *attrs, enum val_person_mode mode, const char *pointer,
                struct ja_errors *e)
{
	int before = e->count;
	if (!json_is_object(attrs)) {
		problem(e, pointer, NULL, "The person's attributes must be an object.");
		return false;
	}
	const char *const *keys = mode == VAL_PERSON_NAMED ? named_keys : person_keys;
	const char *key;
	const json_t *v;
	json_object_foreach((json_t *)attrs, key, v)
	{
		if (!known(keys, key) &&
		    !(mode == VAL_PERSON_PATCH && strcmp(key, "registration_status") == 0))
			val_unknown(e, pointer, key, "attribute");
	}
	check_identity(attrs, mode, pointer, e);
	check_string(attrs, "reference", VAL_NAME_MAX, pointer, e);
	if (mode == VAL_PERSON_NAMED)
		return e->count == before;
	check_string(attrs, "first_name", VAL_NAME_MAX, pointer, e);
	check_string(attrs, "last_name", VAL_NAME_MAX, pointer, e);
	check_string(attrs, "referrer", VAL_REFERRER_MAX, pointer, e);
	check_string(attrs, "utm_source", VAL_NAME_MAX, pointer, e);
	check_string(attrs, "utm_medium", VAL_NAME_MAX, pointer, e);
	check_string(attrs, "utm_campaign", VAL_NAME_MAX, pointer, e);
	check_string(attrs, "utm_term", VAL_NAME_MAX, pointer, e);
	check_string(attrs, "utm_content", VAL_NAME_MAX, pointer, e);
	check_string(attrs, "center_id", VAL_NAME_MAX, pointer, e);
	const json_t *track = json_object_get(attrs, "track_id");
	if (track && !json_is_null(track) &&
	    (!json_is_integer(track) || json_integer_value(track) < 0 ||
	     json_integer_value(track) > INT32_MAX))
		problem(e, pointer, "track_id", "track_id must be a whole number (a track's id).");
	check_fields(json_object_get(attrs, "fields"), pointer, e);
	if (mode == VAL_PERSON_PATCH)
		check_status(attrs, pointer, e);
	return e->count == before;
}

bool val_optional_bool(const json_t *obj, const char *key, const char *pointer, struct ja_errors *e,
                       bool *out)
{
	const json_t *v = json_object_get(obj, key);
	*out = false;
	if (!v)
		return true;
	if (!json_is_boolean(v)) {
		char detail[96];
		snprintf(detail, sizeof(detail), "%s must be true or false.", key);
		problem(e, pointer, key, detail);
		return false;
	}
	*out = json_is_true(v);
	return true;
}

static void check_time(const json_t *attrs, const char *key, const char *pointer,
                       struct ja_errors *e)
{
	const json_t *v = json_object_get(attrs, key);
	if (!v || json_is_null(v))
		return;
	if (!json_is_string(v) || !val_rfc3339(json_string_value(v))) {
		char detail[128];
		snprintf(detail, sizeof(detail),
		         "%s must be an RFC 3339 date-time such as 2030-01-31T09:00:00Z.", key);
		problem(e, pointer, key, detail);
	}
}

/* registration_opens_at must not be after registration_closes_at. */
static void check_window(const json_t *attrs, const char *pointer, struct ja_errors *e)
{
	const json_t *o = json_object_get(attrs, "registration_opens_at");
	const json_t *c = json_object_get(attrs, "registration_closes_at");
	long long opens, closes;
	if (json_is_string(o) && json_is_string(c) &&
	    val_rfc3339_us(json_string_value(o), &opens) &&
	    val_rfc3339_us(json_string_value(c), &closes) && opens > closes)
		problem(e, pointer, "registration_closes_at",
		        "registration_closes_at must not be before registration_opens_at.");
}

static const char *const session_keys[] = {"title",
                                           "starts_at",
                                           "capacity",
                                           "registration_opens_at",
                                           "registration_closes_at",
                                           "approval",
                                           "waitlist",
                                           "tracks",
                                           NULL};

/* tracks: at most 100 of {"id": whole number, "name": "..."}, ids unique. */
static void check_tracks(const json_t *tracks, const char *pointer, struct ja_errors *e)
{
	char ptr[VAL_PTR_MAX];
	snprintf(ptr, sizeof(ptr), "%.200s/tracks", pointer);
	if (!tracks || json_is_null(tracks))
		return;
	if (!json_is_array(tracks) || json_array_size(tracks) > VAL_TRACKS_MAX) {
		problem(e, ptr, NULL, "tracks must be an array of at most 100 tracks.");
		return;
	}
	size_t i;
	const json_t *t;
	json_array_foreach(tracks, i, t)
	{
		char tp[VAL_PTR_MAX];
		snprintf(tp, sizeof(tp), "%.220s/%zu", ptr, i);
		const json_t *id = json_object_get(t, "id"), *name = json_object_get(t, "name");
		if (!json_is_object(t) || json_object_size(t) != 2 || !json_is_integer(id) ||
		    json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX ||
		    !json_is_string(name) || json_string_length(name) == 0 ||
		    val_utf8_len(json_string_value(name), json_string_length(name)) >
		        VAL_NAME_MAX ||
		    memchr(json_string_value(name), '\0', json_string_length(name))) {
			problem(e, tp, NULL,
			        "Each track is {\"id\": a whole number, \"name\": \"...\"}.");
			continue;
		}
		for (size_t k = 0; k < i; k++) {
			if (json_equal(json_object_get(json_array_get(tracks, k), "id"), id)) {
				problem(e, tp, "id", "Track ids are unique within a session.");
				break;
			}
		}
	}
}

bool val_session(const json_t *attrs, bool patch, const char *pointer, struct ja_errors *e)
{
	int before = e->count;
	if (!json_is_object(attrs)) {
		problem(e, pointer, NULL, "attributes must be an object.");
		return false;
	}
	const char *key;
	const json_t *v;
	json_object_foreach((json_t *)attrs, key, v)
	{
		if (!known(session_keys, key))
			val_unknown(e, pointer, key, "attribute");
	}
	const json_t *title = json_object_get(attrs, "title");
	if ((title || !patch) && (!json_is_string(title) || json_string_length(title) == 0))
		problem(e, pointer, "title", "title is required: a non-empty string.");
	else
		check_string(attrs, "title", VAL_NAME_MAX, pointer, e);
	check_time(attrs, "starts_at", pointer, e);
	check_time(attrs, "registration_opens_at", pointer, e);
	check_time(attrs, "registration_closes_at", pointer, e);
	check_window(attrs, pointer, e);
	const json_t *cap = json_object_get(attrs, "capacity");
	if (cap && !json_is_null(cap) &&
	    (!json_is_integer(cap) || json_integer_value(cap) < 0 ||
	     json_integer_value(cap) > 10000000))
		problem(e, pointer, "capacity",
		        "capacity must be null (unlimited) or a whole number from 0 to 10000000.");
	const json_t *appr = json_object_get(attrs, "approval");
	if (appr && (patch || !json_is_null(appr)) &&
	    (!json_is_string(appr) || (strcmp(json_string_value(appr), "automatic") != 0 &&
	                               strcmp(json_string_value(appr), "manual") != 0)))
		problem(e, pointer, "approval", "approval must be automatic or manual.");
	const json_t *wl = json_object_get(attrs, "waitlist");
	if (wl && (patch || !json_is_null(wl)) && !json_is_boolean(wl))
		problem(e, pointer, "waitlist", "waitlist must be true or false.");
	check_tracks(json_object_get(attrs, "tracks"), pointer, e);
	return e->count == before;
}

const json_t *val_data_attributes(const json_t *doc, const char *type, struct ja_errors *e)
{
	const json_t *data = json_object_get(doc, "data");
	if (!json_is_object(data)) {
		problem(e, "/data", NULL, "data must be an object.");
		return NULL;
	}
	const json_t *t1 = json_object_get(doc, "type"), *t2 = json_object_get(data, "type");
	if (type && t1 && (!json_is_string(t1) || strcmp(json_string_value(t1), type) != 0)) {
		char detail[64];
		snprintf(detail, sizeof(detail), "type must be %s.", type);
		problem(e, "/type", NULL, detail);
	}
	if (type && t2 && (!json_is_string(t2) || strcmp(json_string_value(t2), type) != 0)) {
		char detail[64];
		snprintf(detail, sizeof(detail), "type must be %s.", type);
		problem(e, "/data/type", NULL, detail);
	}
	const json_t *attrs = json_object_get(data, "attributes");
	if (!json_is_object(attrs)) {
		problem(e, "/data/attributes", NULL, "attributes must be an object.");
		return NULL;
	}
	return attrs;
}

static const char *const bulk_keys[] = {
    "tasks", "override_duplicates", "auto_approve", "action", "waitlist", NULL};
static const char *const actions[] = {"register", "approve", "deny", "cancel", NULL};

/* action: register (the default) or a bulk action. */
static void check_action(const json_t *attrs, struct val_bulk *b, struct ja_errors *e)
{
	const json_t *v = json_object_get(attrs, "action");
	b->action = "register";
	if (!v)
		return;
	if (!json_is_string(v) || !known(actions, json_string_value(v))) {
		problem(e, "/data/attributes", "action",
		        "action must be register, approve, deny or cancel.");
		return;
	}
	for (const char *const *a = actions; *a; a++) {
		if (strcmp(*a, json_string_value(v)) == 0)
			b->action = *a;
	}
}

void val_bulk(const json_t *doc, int max_tasks, struct val_bulk *b, struct ja_errors *e)
{
	const json_t *attrs = val_data_attributes(doc, "jobs", e);
	if (!attrs)
		return;
	const char *key;
	const json_t *v;
	json_object_foreach((json_t *)attrs, key, v)
	{
		if (!known(bulk_keys, key))
			val_unknown(e, "/data/attributes", key, "attribute");
	}
	val_optional_bool(attrs, "override_duplicates", "/data/attributes", e, &b->override);
	val_optional_bool(attrs, "auto_approve", "/data/attributes", e, &b->auto_approve);
	val_optional_bool(attrs, "waitlist", "/data/attributes", e, &b->waitlist);
	check_action(attrs, b, e);
	enum val_person_mode mode =
	    strcmp(b->action, "register") == 0 ? VAL_PERSON_NEW : VAL_PERSON_NAMED;
	const json_t *tasks = json_object_get(attrs, "tasks");
	size_t n = json_array_size(tasks);
	if (!json_is_array(tasks) || n == 0) {
		ja_error_add(e, 422, "validation_failed", "Validation failed",
		             "tasks must be an array of 1 or more people.",
		             "/data/attributes/tasks");
		return;
	}
	if (n > (size_t)max_tasks) {
		char detail[96];
		snprintf(detail, sizeof(detail), "A job holds at most %d tasks; this one has %zu.",
		         max_tasks, n);
		ja_error_add(e, 422, "too_many_tasks", "Too many tasks", detail,
		             "/data/attributes/tasks");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *task = json_array_get(tasks, i);
		char ptr[96];
		snprintf(ptr, sizeof(ptr), "/data/attributes/tasks/%zu", i);
		const json_t *pattrs = json_object_get(task, "attributes");
		const json_t *type = json_object_get(task, "type");
		if (!json_is_object(task) || !json_is_object(pattrs) ||
		    json_object_size(task) != 1 + (type != NULL) ||
		    (type &&
		     (!json_is_string(type) || strcmp(json_string_value(type), "people") != 0))) {
			ja_error_add(e, 422, "validation_failed", "Validation failed",
			             "Each task is {\"attributes\": {person}}.", ptr);
			continue;
		}
		char aptr[112];
		snprintf(aptr, sizeof(aptr), "%s/attributes", ptr);
		if (val_person(pattrs, mode, aptr, e) && b->people &&
		    json_array_append(b->people, (json_t *)pattrs) != 0) {
			json_decref(b->people);
			b->people = NULL;
		}
	}
}
