-- RETURNING of a soft DELETE.  Unqualified columns show the row as the soft
-- delete left it (deleted_at set), on every version.  PostgreSQL 18 lets
-- RETURNING name OLD and NEW: a soft DELETE answers like a DELETE — OLD is the
-- row before, NEW is NULL (no row remains) — although it is an UPDATE
-- underneath.  Before 18, OLD and NEW are unknown names (the alternative
-- expected file softdelete_returning_1.out).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never

CREATE TABLE notes_r (id int PRIMARY KEY, body text);
SELECT lifecycle.soft_delete_enable('notes_r');
INSERT INTO notes_r SELECT g, 'note ' || g FROM generate_series(1, 7) g;
CREATE VIEW notes_r_v AS SELECT id, body FROM notes_r;

-- Every version.
DELETE FROM notes_r WHERE id = 1 RETURNING id, body, deleted_at IS NOT NULL AS deleted;

-- PostgreSQL 18: OLD and NEW.
DELETE FROM notes_r WHERE id = 2
 RETURNING old.id AS old_id, old.body AS old_body, old.deleted_at IS NULL AS old_live,
           new.id AS new_id, new.body AS new_body, new.deleted_at AS new_deleted_at, new IS NULL AS new_is_null;
DELETE FROM notes_r WHERE id = 3 RETURNING old.*, new.*;
DELETE FROM notes_r WHERE id = 4 RETURNING id, deleted_at IS NOT NULL AS deleted, old.deleted_at, new.id;
-- Through a view.
DELETE FROM notes_r_v WHERE id = 5 RETURNING old.id AS old_id, new.id AS new_id, new IS NULL AS new_is_null;
-- A real DELETE (lifecycle.hard_delete, the owner) answers the same.
SET lifecycle.hard_delete = on;
DELETE FROM notes_r WHERE id = 6 RETURNING old.id AS old_id, new.id AS new_id, new IS NULL AS new_is_null;
RESET lifecycle.hard_delete;
-- An UPDATE keeps its NEW.
UPDATE notes_r SET body = 'changed' WHERE id = 7 RETURNING old.body AS old_body, new.body AS new_body;

SET lifecycle.include_deleted = on;
SELECT id, body, deleted_at IS NOT NULL AS deleted FROM notes_r ORDER BY id;
RESET lifecycle.include_deleted;
DROP VIEW notes_r_v;
DROP TABLE notes_r;
