-- batch_unlocked() is gone: batch_take() (sql/functions/batches.sql)
-- reports the delivered tasks it does not register itself, and nothing
-- else called it. A function file can only create or replace; removing a
-- function from one takes a migration like this, which a database made
-- from the baseline finds nothing to do for.
DROP FUNCTION IF EXISTS batch_unlocked(uuid[], uuid[]);
