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
CREATE FUNCTION sc_trigger_lines(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
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
CREATE TABLE sc_lone (id int PRIMARY KEY, body text);
SELECT lifecycle.soft_delete_enable('sc_lone');
INSERT INTO sc_lone SELECT g, 'lone ' || g FROM generate_series(1, 6) g;
DELETE FROM sc_lone WHERE id IN (1, 2);
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted, deleted_by, delete_event IS NOT NULL AS has_event
  FROM sc_lone ORDER BY id;
SELECT count(DISTINCT delete_event) AS events FROM sc_lone WHERE deleted_at IS NOT NULL;
RESET lifecycle.include_deleted;
-- The trigger did not run (EXPLAIN ANALYZE leaves it enabled; a WHEN that is
-- false for every row lists no trigger either way).
SELECT sc_trigger_lines('DELETE FROM sc_lone WHERE id = 3');

-- An application's own soft delete and restore on that table keep the
-- trigger: the UPDATE gets an event and the actor; the restore clears them.
UPDATE sc_lone SET deleted_at = now() WHERE id = 4;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, delete_event IS NOT NULL AS has_event FROM sc_lone WHERE id = 4;
UPDATE sc_lone SET deleted_at = NULL WHERE id = 4;
SELECT id, deleted_at, deleted_by, delete_event FROM sc_lone WHERE id = 4;
RESET lifecycle.include_deleted;

-- A user's BEFORE UPDATE row trigger that drops the event of a row being
-- deleted: the cascade trigger must still see the row (an application's soft
-- delete without an event gets one).
CREATE FUNCTION sc_drop_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.deleted_at IS NULL THEN
        NEW.delete_event := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER a_drop_event BEFORE UPDATE ON sc_lone FOR EACH ROW EXECUTE FUNCTION sc_drop_event();
DELETE FROM sc_lone WHERE id = 5;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, delete_event IS NOT NULL AS has_event FROM sc_lone WHERE id = 5;
RESET lifecycle.include_deleted;
DROP TRIGGER a_drop_event ON sc_lone;

-- A referenced table cascades: directly, through a CTE, and the EXPLAIN
-- ANALYZE shows the trigger's calls.
CREATE TABLE sc_parent (id int PRIMARY KEY);
CREATE TABLE sc_child (id int PRIMARY KEY, parent_id int REFERENCES sc_parent ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('sc_parent');
SELECT lifecycle.soft_delete_enable('sc_child');
INSERT INTO sc_parent SELECT g FROM generate_series(1, 4) g;
INSERT INTO sc_child SELECT g, (g + 1) / 2 FROM generate_series(1, 8) g;
DELETE FROM sc_parent WHERE id = 1;
WITH d AS (DELETE FROM sc_parent WHERE id = 2 RETURNING id) SELECT count(*) AS deleted FROM d;
SELECT sc_trigger_lines('DELETE FROM sc_parent WHERE id = 3');
SELECT id, parent_id FROM sc_child ORDER BY id;
SET lifecycle.include_deleted = on;
SELECT c.id, c.delete_event = p.delete_event AS same_event
  FROM sc_child c JOIN sc_parent p ON p.id = c.parent_id WHERE c.deleted_at IS NOT NULL ORDER BY c.id;
RESET lifecycle.include_deleted;
-- The child itself is referenced by nothing: its own soft DELETE is spared,
-- and restore of the parent's event brings its children back.
DELETE FROM sc_child WHERE id = 7;
SELECT lifecycle.restore('sc_parent', 1);
SELECT id, parent_id FROM sc_child ORDER BY id;

-- A partitioned table: a partition referenced through its parent cascades;
-- a partitioned table nothing references soft-deletes.
CREATE TABLE sc_pparent (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE sc_pparent_1 PARTITION OF sc_pparent FOR VALUES FROM (1) TO (100);
CREATE TABLE sc_pparent_2 PARTITION OF sc_pparent FOR VALUES FROM (100) TO (200);
CREATE TABLE sc_pchild (id int PRIMARY KEY, parent_id int REFERENCES sc_pparent ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('sc_pparent');
SELECT lifecycle.soft_delete_enable('sc_pchild');
INSERT INTO sc_pparent VALUES (1), (150);
INSERT INTO sc_pchild VALUES (1, 1), (2, 150), (3, 150);
DELETE FROM sc_pparent WHERE id IN (1, 150);
SELECT count(*) AS live_children FROM sc_pchild;
CREATE TABLE sc_plone (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE sc_plone_1 PARTITION OF sc_plone FOR VALUES FROM (1) TO (100);
CREATE TABLE sc_plone_2 PARTITION OF sc_plone FOR VALUES FROM (100) TO (200);
SELECT lifecycle.soft_delete_enable('sc_plone');
INSERT INTO sc_plone VALUES (1), (150);
DELETE FROM sc_plone;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, delete_event IS NOT NULL AS has_event FROM sc_plone ORDER BY id;
RESET lifecycle.include_deleted;

-- A foreign key added later: the next soft DELETE cascades.
CREATE TABLE sc_late_child (id int PRIMARY KEY, lone_id int);
SELECT lifecycle.soft_delete_enable('sc_late_child');
INSERT INTO sc_late_child VALUES (1, 6);
ALTER TABLE sc_late_child ADD FOREIGN KEY (lone_id) REFERENCES sc_lone ON DELETE CASCADE;
DELETE FROM sc_lone WHERE id = 6;
SELECT count(*) AS live_late_children FROM sc_late_child;

RESET lifecycle.actor;
DROP TABLE sc_late_child, sc_lone, sc_child, sc_parent, sc_pchild, sc_pparent, sc_plone;
DROP FUNCTION sc_drop_event(), sc_trigger_lines(text);
