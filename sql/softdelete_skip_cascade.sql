-- A soft DELETE of a table no foreign key references does not run the
-- cascade trigger (it could do nothing: the executor's copy of the table's
-- triggers has it disabled for that statement).  Every statement where the
-- trigger has work keeps it: a referenced table (plain, partitioned, through
-- a data-modifying CTE), an application's own soft delete or restore by
-- UPDATE, and a table with a user's BEFORE UPDATE row trigger that may change
-- the new row.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never
SET lifecycle.actor = 'tester';
-- The trigger lines of EXPLAIN ANALYZE (the plan's own lines differ between
-- versions).
CREATE FUNCTION trigger_lines(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || q LOOP
        IF line LIKE 'Trigger%' THEN
            RETURN NEXT line;
        END IF;
    END LOOP;
END $$;

-- A table nothing references: the soft DELETE stamps actor and event.
CREATE TABLE lone (id int PRIMARY KEY, body text);
SELECT lifecycle.soft_delete_enable('lone');
INSERT INTO lone SELECT g, 'lone ' || g FROM generate_series(1, 6) g;
DELETE FROM lone WHERE id IN (1, 2);
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted, deleted_by, delete_event IS NOT NULL AS has_event
  FROM lone ORDER BY id;
SELECT count(DISTINCT delete_event) AS events FROM lone WHERE deleted_at IS NOT NULL;
RESET lifecycle.include_deleted;
-- The trigger did not run (EXPLAIN ANALYZE leaves it enabled; a WHEN that is
-- false for every row lists no trigger either way).
SELECT trigger_lines('DELETE FROM lone WHERE id = 3');

-- An application's own soft delete and restore on that table keep the
-- trigger: the UPDATE gets an event and the actor; the restore clears them.
UPDATE lone SET deleted_at = now() WHERE id = 4;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, delete_event IS NOT NULL AS has_event FROM lone WHERE id = 4;
UPDATE lone SET deleted_at = NULL WHERE id = 4;
SELECT id, deleted_at, deleted_by, delete_event FROM lone WHERE id = 4;
RESET lifecycle.include_deleted;

-- A user's BEFORE UPDATE row trigger that drops the event of a row being
-- deleted: the cascade trigger must still see the row (an application's soft
-- delete without an event gets one).
CREATE FUNCTION drop_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.deleted_at IS NULL THEN
        NEW.delete_event := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER a_drop_event BEFORE UPDATE ON lone FOR EACH ROW EXECUTE FUNCTION drop_event();
DELETE FROM lone WHERE id = 5;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, delete_event IS NOT NULL AS has_event FROM lone WHERE id = 5;
RESET lifecycle.include_deleted;
DROP TRIGGER a_drop_event ON lone;

-- A referenced table cascades: directly, through a CTE, and the EXPLAIN
-- ANALYZE shows the trigger's calls.
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('parent');
SELECT lifecycle.soft_delete_enable('child');
INSERT INTO parent SELECT g FROM generate_series(1, 4) g;
INSERT INTO child SELECT g, (g + 1) / 2 FROM generate_series(1, 8) g;
DELETE FROM parent WHERE id = 1;
WITH d AS (DELETE FROM parent WHERE id = 2 RETURNING id) SELECT count(*) AS deleted FROM d;
SELECT trigger_lines('DELETE FROM parent WHERE id = 3');
SELECT id, parent_id FROM child ORDER BY id;
SET lifecycle.include_deleted = on;
SELECT c.id, c.delete_event = p.delete_event AS same_event
  FROM child c JOIN parent p ON p.id = c.parent_id WHERE c.deleted_at IS NOT NULL ORDER BY c.id;
RESET lifecycle.include_deleted;
-- The child itself is referenced by nothing: its own soft DELETE is spared,
-- and restore of the parent's event brings its children back.
DELETE FROM child WHERE id = 7;
SELECT lifecycle.restore('parent', 1);
SELECT id, parent_id FROM child ORDER BY id;

-- A partitioned table: a partition referenced through its parent cascades;
-- a partitioned table nothing references soft-deletes.
CREATE TABLE pparent (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE pparent_1 PARTITION OF pparent FOR VALUES FROM (1) TO (100);
CREATE TABLE pparent_2 PARTITION OF pparent FOR VALUES FROM (100) TO (200);
CREATE TABLE pchild (id int PRIMARY KEY, parent_id int REFERENCES pparent ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('pparent');
SELECT lifecycle.soft_delete_enable('pchild');
INSERT INTO pparent VALUES (1), (150);
INSERT INTO pchild VALUES (1, 1), (2, 150), (3, 150);
DELETE FROM pparent WHERE id IN (1, 150);
SELECT count(*) AS live_children FROM pchild;
CREATE TABLE plone (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE plone_1 PARTITION OF plone FOR VALUES FROM (1) TO (100);
CREATE TABLE plone_2 PARTITION OF plone FOR VALUES FROM (100) TO (200);
SELECT lifecycle.soft_delete_enable('plone');
INSERT INTO plone VALUES (1), (150);
DELETE FROM plone;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, delete_event IS NOT NULL AS has_event FROM plone ORDER BY id;
RESET lifecycle.include_deleted;

-- A foreign key added later: the next soft DELETE cascades.
CREATE TABLE late_child (id int PRIMARY KEY, lone_id int);
SELECT lifecycle.soft_delete_enable('late_child');
INSERT INTO late_child VALUES (1, 6);
ALTER TABLE late_child ADD FOREIGN KEY (lone_id) REFERENCES lone ON DELETE CASCADE;
DELETE FROM lone WHERE id = 6;
SELECT count(*) AS live_late_children FROM late_child;

RESET lifecycle.actor;
DROP TABLE late_child, lone, child, parent, pchild, pparent, plone;
DROP FUNCTION drop_event(), trigger_lines(text);
