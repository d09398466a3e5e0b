-- Addresses compare by Unicode case folding, not ASCII lower(); a job's
-- scan starts at its lowest queued task.
--
-- The database's collation is C, whose lower() folds A-Z only: ÉMILE@x.org
-- and émile@x.org, user@BÜCHER.de and user@bücher.de were two people
-- holding two seats. email_key() is what the session's uniqueness, every
-- duplicate check and every lookup compare now: the address in NFC (so a
-- precomposed é and e + U+0301 are one), mapped to upper case and back to
-- lower case with ICU's full mappings (ß and SS become ss, the ligature ﬁ
-- becomes fi, final and medial sigma meet), then in NFC again. PostgreSQL
-- 15 has no casefold(); upper-then-lower under ICU gives the same classes
-- as Unicode's full case folding for every address a person can type,
-- Turkish dotless ı aside (folded to i here, kept apart by casefold).
--
-- Existing people whose addresses become equal under the new key are not
-- merged: the earliest (lowest position) keeps the address's uniqueness;
-- each later one is marked with email_conflict_of, the person it collides
-- with, and the migration prints how many there are. Such rows stay as they
-- were (their registrations and seats unchanged) and still count as the
-- address's registration for duplicate checks; an operator resolves them
-- (SELECT * FROM people WHERE email_conflict_of IS NOT NULL). On a new
-- database there is nobody to mark.
--
-- email_key() is the one function defined by a migration: the unique
-- index people_session_email is built on it, so it must exist before that
-- index, and its body cannot change without rebuilding the index (and
-- resolving the addresses that become equal), which is a schema
-- migration's work.

-- An ASCII address (one byte a character) takes the short way: it is its
-- own NFC, and ICU's mappings of ASCII letters are A-Z <-> a-z, which is
-- what lower() does under the C collation (named, whatever the database's
-- own). The ICU calls cost PostgreSQL several microseconds an address, on
-- every registration's lookups. The function is not STRICT so that
-- PostgreSQL inlines it, in queries and in the index alike (a NULL address
-- gives NULL anyway): called as a function, each use cost 2 us instead of
-- 0.5 us, and a registration uses it several times.
CREATE FUNCTION email_key(p_email text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN octet_length(p_email) = char_length(p_email)
            THEN lower(p_email COLLATE "C") COLLATE "default"
            ELSE normalize(lower(upper(normalize(p_email, NFC) COLLATE "und-x-icu")
                                 COLLATE "und-x-icu"), NFC) COLLATE "default" END;

ALTER TABLE people ADD COLUMN email_conflict_of uuid;

UPDATE people p SET email_conflict_of = f.first_id
FROM (SELECT id, first_value(id) OVER w AS first_id, row_number() OVER w AS n
      FROM people
      WINDOW w AS (PARTITION BY session_id, email_key(email) ORDER BY position)) f
WHERE p.id = f.id AND f.n > 1;

DO $$
DECLARE
    n int;
BEGIN
    SELECT count(*) INTO n FROM people WHERE email_conflict_of IS NOT NULL;
    IF n > 0 THEN
        RAISE WARNING '% people share an address with an earlier person of their session once case is folded across Unicode; they are kept and marked: SELECT * FROM people WHERE email_conflict_of IS NOT NULL', n;
    END IF;
END
$$;

DROP INDEX people_session_email;
CREATE UNIQUE INDEX people_session_email ON people (session_id, email_key(email))
    WHERE email_conflict_of IS NULL;

-- A lower bound of the job's lowest queued index: every task below it is
-- terminal. A batch scans a job's tasks from here, not from index 0, and
-- no further than it takes (sql/functions/batches.sql), so a batch costs
-- the same at any depth of a large job (BULKREG_MAX_TASKS may be raised
-- well past 50). Counter updates raise it; retry_failed lowers it.
ALTER TABLE jobs ADD COLUMN queued_from int NOT NULL DEFAULT 0;

-- What the first cycle's databases have and the function files no longer
-- define: the careful path took (p_ids, p_wait) before, and the counter
-- function takes the new lower bound now (an old four-argument form would
-- make a call with four arguments ambiguous).
DROP FUNCTION IF EXISTS batch_careful(uuid[], boolean);
DROP FUNCTION IF EXISTS job_add_counts(uuid, int, int, int);
