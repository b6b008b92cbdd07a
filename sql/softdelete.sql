-- Soft delete (SPEC §1): a plain DELETE keeps the row, reports it, hides it,
-- cascades along foreign keys and can be undone exactly.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never

CREATE OR REPLACE FUNCTION err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, msg, nullif(det, ''), nullif(hnt, ''));
END $$;

CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL);
INSERT INTO accounts SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 6) g;
-- A statement prepared before enabling must not hard-delete afterwards.
PREPARE del_account(int) AS DELETE FROM accounts WHERE id = $1;

SELECT lifecycle.soft_delete_enable('accounts');
SELECT tbl, retention, hide FROM lifecycle.soft_delete_tables;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'accounts'::regclass AND attnum > 0 ORDER BY attnum;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'accounts'::regclass ORDER BY tgname;

-- Command tags show the rows soft-deleted, as ORMs check them.
\set QUIET off
DELETE FROM accounts WHERE id = 1;
DELETE FROM accounts WHERE id = 1;                   -- already deleted: not counted
DELETE FROM accounts WHERE id IN (2, 3);
EXECUTE del_account(4);
DELETE FROM accounts WHERE id = 5 RETURNING id, email, deleted_at IS NOT NULL AS deleted;
WITH gone AS (DELETE FROM accounts WHERE id = 6 RETURNING id) SELECT count(*) FROM gone;
\set QUIET on

-- Hidden from SELECT, UPDATE and DELETE; include_deleted shows them.
SELECT count(*) AS visible FROM accounts;
UPDATE accounts SET email = 'x' WHERE id = 1 RETURNING id;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, delete_event IS NOT NULL AS has_event,
       delete_event = (SELECT delete_event FROM accounts WHERE id = 2) AS same_event_as_2
  FROM accounts ORDER BY id;
RESET lifecycle.include_deleted;
-- Nothing was removed.
SET lifecycle.include_deleted = on;
SELECT count(*) AS physically_there FROM accounts;
RESET lifecycle.include_deleted;

-- deleted_by is lifecycle.actor when set, else current_user.
INSERT INTO accounts VALUES (7, 'seven@example.com');
SET lifecycle.actor = 'admin:42';
DELETE FROM accounts WHERE id = 7;
RESET lifecycle.actor;
SET lifecycle.include_deleted = on;
SELECT deleted_by FROM accounts WHERE id = 7;
RESET lifecycle.include_deleted;

-- Restore brings the row back.
SELECT lifecycle.restore('accounts', 7);
SELECT id, deleted_at, deleted_by, delete_event FROM accounts WHERE id = 7;
SELECT lifecycle.restore('accounts', 7);            -- live already: 0

-- Foreign keys: checks still see soft-deleted parents.
CREATE TABLE orgs (id int PRIMARY KEY, name text);
CREATE TABLE teams (id int PRIMARY KEY, org_id int REFERENCES orgs ON DELETE CASCADE, name text);
CREATE TABLE members (id int PRIMARY KEY, team_id int REFERENCES teams ON DELETE CASCADE, name text);
CREATE TABLE invoices (id int PRIMARY KEY, org_id int REFERENCES orgs ON DELETE RESTRICT);
CREATE TABLE notes (id int PRIMARY KEY, org_id int REFERENCES orgs ON DELETE SET NULL);
CREATE TABLE audit (id int PRIMARY KEY, org_id int REFERENCES orgs ON DELETE CASCADE);   -- not enabled
SELECT lifecycle.soft_delete_enable(t) FROM unnest('{orgs,teams,members,invoices,notes}'::regclass[]) t;
INSERT INTO orgs VALUES (1, 'acme'), (2, 'globex'), (3, 'initech');
INSERT INTO teams VALUES (10, 1, 'red'), (11, 1, 'blue'), (20, 2, 'green');
INSERT INTO members VALUES (100, 10, 'ann'), (101, 10, 'bob'), (110, 11, 'cy'), (200, 20, 'di');
INSERT INTO invoices VALUES (1000, 3);
INSERT INTO notes VALUES (5000, 1);
INSERT INTO audit VALUES (9000, 1);

-- A member deleted earlier, by another event.
DELETE FROM members WHERE id = 101;
-- Multi-level cascade with one delete_event.
\set QUIET off
DELETE FROM orgs WHERE id = 1;
\set QUIET on
SELECT 'orgs' AS t, id FROM orgs UNION ALL SELECT 'teams', id FROM teams UNION ALL SELECT 'members', id FROM members
 ORDER BY 1, 2;
SET lifecycle.include_deleted = on;
SELECT 'teams' AS t, id, delete_event = (SELECT delete_event FROM orgs WHERE id = 1) AS same_event FROM teams
UNION ALL
SELECT 'members', id, delete_event = (SELECT delete_event FROM orgs WHERE id = 1) FROM members
 ORDER BY 1, 2;
RESET lifecycle.include_deleted;
-- SET NULL children and children in tables without soft delete keep their link.
SELECT id, org_id FROM notes;
SELECT id, org_id FROM audit;
-- A new row may still reference the soft-deleted parent (the FK check sees it).
INSERT INTO notes VALUES (5001, 1);

-- RESTRICT / NO ACTION with live children: 23503, nothing changed.
SELECT err($$DELETE FROM orgs WHERE id = 3$$);
SELECT count(*) AS initech_visible FROM orgs WHERE id = 3;
DELETE FROM invoices WHERE id = 1000;
DELETE FROM orgs WHERE id = 3;                      -- only a deleted invoice is left: allowed
SELECT count(*) AS initech_visible FROM orgs WHERE id = 3;

-- Restore is exact: the org, its teams and the members its event deleted — not bob.
SELECT lifecycle.restore('orgs', 1);
SELECT 'teams' AS t, id FROM teams UNION ALL SELECT 'members', id FROM members ORDER BY 1, 2;
-- Restoring a child whose parent is still deleted: 23503.
DELETE FROM teams WHERE id = 20;
DELETE FROM orgs WHERE id = 2;
SELECT err($$SELECT lifecycle.restore('teams', 20)$$);
SELECT lifecycle.restore('orgs', 2);
SELECT id FROM teams WHERE id = 20;     -- deleted by its own earlier event: stays deleted
SELECT lifecycle.restore('teams', 20);
SELECT err($$SELECT lifecycle.restore('orgs', 99)$$);

-- MERGE … THEN DELETE is a soft delete too, counted in the command tag like
-- MERGE's other actions: the row stays, hidden, its CASCADE children go with
-- it (one delete_event), and restore brings them back.
CREATE TABLE shops (id int PRIMARY KEY, name text);
CREATE TABLE items (id int PRIMARY KEY, shop_id int REFERENCES shops ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('shops'), lifecycle.soft_delete_enable('items');
INSERT INTO shops VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO items VALUES (10, 1), (11, 1), (20, 2);
\set QUIET off
MERGE INTO shops s USING (VALUES (1, 'closed'), (2, 'open'), (4, 'new')) v(id, status) ON s.id = v.id
  WHEN MATCHED AND v.status = 'closed' THEN DELETE
  WHEN MATCHED THEN UPDATE SET name = s.name || '!'
  WHEN NOT MATCHED THEN INSERT VALUES (v.id, v.status);
MERGE INTO shops s USING (VALUES (1), (3)) v(id) ON s.id = v.id WHEN MATCHED THEN DELETE;   -- 1 is hidden now
\set QUIET on
SELECT id, name FROM shops ORDER BY id;
SELECT id, shop_id FROM items ORDER BY id;
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted, deleted_by = current_user AS by_me,
       delete_event = (SELECT delete_event FROM items WHERE id = 10) AS same_event_as_item_10
  FROM shops ORDER BY id;
SELECT id, deleted_at IS NOT NULL AS deleted FROM items ORDER BY id;
RESET lifecycle.include_deleted;
SELECT lifecycle.restore('shops', 1);
SELECT id, name FROM shops ORDER BY id;
SELECT id, shop_id FROM items ORDER BY id;
-- With hide = false a deleted row stays visible to MERGE, which does not delete it again.
CREATE TABLE shelves (id int PRIMARY KEY);
SELECT lifecycle.soft_delete_enable('shelves', hide => false);
INSERT INTO shelves VALUES (1), (2);
\set QUIET off
MERGE INTO shelves s USING (VALUES (1)) v(id) ON s.id = v.id WHEN MATCHED THEN DELETE;
MERGE INTO shelves s USING (VALUES (1), (2)) v(id) ON s.id = v.id WHEN MATCHED THEN DELETE;
\set QUIET on
SELECT id, deleted_at IS NOT NULL AS deleted FROM shelves ORDER BY id;
DROP TABLE shelves;

-- Self-reference (a tree) and a cycle.
CREATE TABLE folders (id int PRIMARY KEY, parent_id int REFERENCES folders ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('folders');
INSERT INTO folders VALUES (1, NULL), (2, 1), (3, 2), (4, 3), (5, NULL);
DELETE FROM folders WHERE id = 2;
SELECT id FROM folders ORDER BY id;
SELECT lifecycle.restore('folders', 2);
CREATE TABLE ring_a (id int PRIMARY KEY, b_id int);
CREATE TABLE ring_b (id int PRIMARY KEY, a_id int REFERENCES ring_a ON DELETE CASCADE);
ALTER TABLE ring_a ADD FOREIGN KEY (b_id) REFERENCES ring_b ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
SELECT lifecycle.soft_delete_enable('ring_a'), lifecycle.soft_delete_enable('ring_b');
BEGIN;
INSERT INTO ring_a VALUES (1, 1);
INSERT INTO ring_b VALUES (1, 1);
COMMIT;
DELETE FROM ring_a WHERE id = 1;
SELECT (SELECT count(*) FROM ring_a) AS a_visible, (SELECT count(*) FROM ring_b) AS b_visible;
SELECT lifecycle.restore('ring_a', 1);

-- The cascade trigger queues an event only for a table that a foreign key
-- references; a key added later counts at once, in the same session.
CREATE TABLE boards (id int PRIMARY KEY);
SELECT lifecycle.soft_delete_enable('boards');
INSERT INTO boards VALUES (1), (2);
DELETE FROM boards WHERE id = 1;
CREATE TABLE cards (id int PRIMARY KEY, board_id int REFERENCES boards ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('cards');
INSERT INTO cards VALUES (10, 2), (11, 2);
DELETE FROM boards WHERE id = 2;
SELECT (SELECT count(*) FROM boards) AS boards_visible, (SELECT count(*) FROM cards) AS cards_visible;
-- A key that references a partitioned table: the partition's row cascades.
CREATE TABLE zones (id int, kind text, PRIMARY KEY (id, kind)) PARTITION BY LIST (kind);
CREATE TABLE zones_a PARTITION OF zones FOR VALUES IN ('a');
CREATE TABLE sites (id int PRIMARY KEY, zone_id int, kind text,
                    FOREIGN KEY (zone_id, kind) REFERENCES zones ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('zones'), lifecycle.soft_delete_enable('sites');
INSERT INTO zones VALUES (1, 'a');
INSERT INTO sites VALUES (100, 1, 'a');
DELETE FROM zones_a WHERE id = 1;
SELECT (SELECT count(*) FROM zones) AS zones_visible, (SELECT count(*) FROM sites) AS sites_visible;

-- Partitioned tables: DELETE on the parent or on a partition.
CREATE TABLE events (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
SELECT lifecycle.soft_delete_enable('events');
INSERT INTO events VALUES (1, 'eu'), (2, 'eu'), (3, 'us'), (4, 'us');
\set QUIET off
DELETE FROM events WHERE id IN (1, 3);
DELETE FROM events_us WHERE id = 4;
\set QUIET on
SELECT id, region FROM events ORDER BY id;
SELECT count(*) AS us_visible FROM events_us;
SET lifecycle.include_deleted = on;
SELECT count(*) AS all_rows FROM events;
RESET lifecycle.include_deleted;
SELECT err($$SELECT lifecycle.restore('events', 1)$$);   -- composite key
-- A composite key: a JSON object naming its columns, or an array in key order.
CREATE TABLE event_notes (id int PRIMARY KEY, event_id int, event_region text, body text,
                          FOREIGN KEY (event_id, event_region) REFERENCES events ON DELETE CASCADE);
SELECT lifecycle.soft_delete_enable('event_notes');
INSERT INTO event_notes VALUES (1, 2, 'eu', 'a'), (2, 2, 'eu', 'b');
\set QUIET off
DELETE FROM events WHERE id = 2;
\set QUIET on
SELECT lifecycle.restore('events', '{"id": 2, "region": "eu"}'::jsonb) AS restored;   -- the event and its 2 notes
SELECT count(*) AS notes_visible FROM event_notes;
DELETE FROM events WHERE id = 2;
PREPARE restore_key(regclass, text) AS SELECT lifecycle.restore($1, $2);
EXECUTE restore_key('events', '{"region": "eu", "id": "2"}');                        -- a driver's bound string
DELETE FROM events WHERE id = 2;
SELECT lifecycle.restore('events', ARRAY['2', 'eu']) AS restored;                   -- key order: id, region
SELECT lifecycle.restore('events', '{"id": 1, "region": "eu"}'::json) AS restored;   -- json; no notes
SELECT err($$SELECT lifecycle.restore('events', ARRAY[4, 5])$$);                             -- no row (4, '5')
SELECT err($$SELECT lifecycle.restore('events', '{"id": 3}'::jsonb)$$);                       -- a column missing
SELECT err($$SELECT lifecycle.restore('events', '{"id": 3, "region": "us", "x": 1}'::jsonb)$$); -- not a key column
SELECT err($$SELECT lifecycle.restore('events', '{"id": null, "region": "us"}'::jsonb)$$);    -- null
SELECT err($$SELECT lifecycle.restore('events', '[3, "us"]'::jsonb)$$);                       -- not an object
SELECT err($$SELECT lifecycle.restore('events', 'three'::text)$$);                            -- not JSON
SELECT err($$SELECT lifecycle.restore('events', ARRAY[3])$$);                                 -- too few values
SELECT err($$SELECT lifecycle.restore('events', ARRAY['us', '3'])$$);                         -- wrong order
SELECT err($$SELECT lifecycle.restore('events', ARRAY[['3', 'us']])$$);                       -- two dimensions
SELECT err($$SELECT lifecycle.restore('events', ARRAY['3', NULL])$$);                         -- null
SELECT lifecycle.restore('events', ARRAY['3', 'us']) AS restored;
SET lifecycle.include_deleted = on;
SELECT id, region, deleted_at IS NOT NULL AS deleted FROM events ORDER BY id, region;
RESET lifecycle.include_deleted;

-- Unique over live rows only.
SELECT lifecycle.soft_unique('accounts', '{email}');
INSERT INTO accounts VALUES (101, 'user1@example.com');          -- its holder is deleted: allowed
SELECT err($$INSERT INTO accounts VALUES (102, 'seven@example.com')$$);   -- a live holder: refused

-- Hard delete: purge, and lifecycle.hard_delete for the owner.
SET lifecycle.include_deleted = on;
UPDATE accounts SET deleted_at = now() - interval '40 days' WHERE id IN (1, 2);
RESET lifecycle.include_deleted;
SELECT lifecycle.purge('accounts', '30 days');
SELECT lifecycle.purge('accounts', '30 days');
SET lifecycle.include_deleted = on;
SELECT id FROM accounts WHERE id <= 3 ORDER BY id;
RESET lifecycle.include_deleted;
SET lifecycle.hard_delete = on;                     -- the owner: a real DELETE (of visible rows)
\set QUIET off
DELETE FROM accounts WHERE id = 101;
\set QUIET on
RESET lifecycle.hard_delete;
SET lifecycle.include_deleted = on;
SELECT count(*) AS account_101 FROM accounts WHERE id = 101;
RESET lifecycle.include_deleted;
SELECT err($$SELECT lifecycle.purge('accounts')$$);     -- no retention set

-- Retention: the worker's soft_delete_purge task (run here by hand).
SELECT lifecycle.soft_delete_enable('accounts', retention => '30 days');
SET lifecycle.include_deleted = on;
UPDATE accounts SET deleted_at = now() - interval '31 days' WHERE id = 4;
RESET lifecycle.include_deleted;
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'soft_delete_purge';
SELECT lifecycle.purge('accounts');

-- Purge removes children before parents (RESTRICT keys included).
SET lifecycle.include_deleted = on;
UPDATE orgs SET deleted_at = now() - interval '1 year', delete_event = 0 WHERE id = 3;
RESET lifecycle.include_deleted;
SELECT lifecycle.purge('orgs', '30 days');
SET lifecycle.include_deleted = on;
SELECT (SELECT count(*) FROM orgs WHERE id = 3) AS org_3, (SELECT count(*) FROM invoices) AS invoices;
RESET lifecycle.include_deleted;

-- Expiry on a soft-delete table soft-deletes the expired rows.
CREATE TABLE links (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
INSERT INTO links VALUES (1, now() - interval '1 hour'), (2, now() + interval '1 hour');
SELECT lifecycle.soft_delete_enable('links'), lifecycle.expire_enable('links', 'expires_at');
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'expire' AND target = 'links'::regclass;
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'expire' AND target = 'links'::regclass;
SELECT id FROM links;
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted FROM links ORDER BY id;
RESET lifecycle.include_deleted;
SELECT lifecycle.expire_disable('links');

-- Privileges: a role with DELETE privilege soft-deletes; it cannot hard-delete,
-- restore without UPDATE privilege, or see rows of tables it cannot read.
CREATE ROLE sd_app;
GRANT SELECT, DELETE ON folders TO sd_app;
SET ROLE sd_app;
\set QUIET off
DELETE FROM folders WHERE id = 5;
\set QUIET on
SELECT err($$SELECT lifecycle.restore('folders', 5)$$);
SET lifecycle.hard_delete = on;
SELECT err($$DELETE FROM folders WHERE id = 1$$);
RESET lifecycle.hard_delete;
SET lifecycle.include_deleted = on;
SELECT err($$SELECT count(*) FROM accounts$$);
SELECT id FROM folders WHERE id = 5;                -- its own table: visible with include_deleted
RESET lifecycle.include_deleted;
SELECT err($$SELECT lifecycle.soft_delete_enable('members')$$);
SELECT err($$SELECT lifecycle.soft_delete_disable('folders')$$);
SELECT err($$SELECT lifecycle.purge('folders', '0')$$);
SELECT err($$SELECT lifecycle.soft_unique('folders', '{parent_id}')$$);
RESET ROLE;
-- Under row-level security, MERGE … THEN DELETE is refused: as an UPDATE
-- action it would be checked against the UPDATE policies, not the DELETE ones.
ALTER TABLE shops ENABLE ROW LEVEL SECURITY;
CREATE POLICY shops_read ON shops FOR SELECT USING (true);
CREATE POLICY shops_delete ON shops FOR DELETE USING (id = 2);
GRANT SELECT, DELETE ON shops TO sd_app;
SET ROLE sd_app;
SELECT err($$MERGE INTO shops s USING (VALUES (2)) v(id) ON s.id = v.id WHEN MATCHED THEN DELETE$$);
\set QUIET off
DELETE FROM shops WHERE id IN (2, 3);       -- DELETE itself is fine: only 2 passes the policy
\set QUIET on
RESET ROLE;
SELECT id FROM shops ORDER BY id;

-- Bad arguments: clear errors, nothing changed.
CREATE TABLE no_pk (a int);
CREATE TABLE bad_col (id int PRIMARY KEY, deleted_at text);
CREATE VIEW v_accounts AS SELECT * FROM accounts;
SELECT err($$SELECT lifecycle.soft_delete_enable(NULL)$$);
SELECT err($$SELECT lifecycle.soft_delete_enable('accounts', hide => NULL)$$);
SELECT err($$SELECT lifecycle.soft_delete_enable('nope')$$);
SELECT err($$SELECT lifecycle.soft_delete_enable('no_pk')$$);
SELECT err($$SELECT lifecycle.soft_delete_enable('bad_col')$$);
SELECT err($$SELECT lifecycle.soft_delete_enable('v_accounts')$$);
SELECT err($$SELECT lifecycle.soft_delete_enable('accounts', retention => '-1 day')$$);
SELECT err($$SELECT lifecycle.soft_delete_disable('no_pk')$$);
SELECT err($$SELECT lifecycle.restore('no_pk', 1)$$);
SELECT err($$SELECT lifecycle.restore('accounts', NULL::int)$$);
SELECT err($$SELECT lifecycle.restore(NULL, 1)$$);
SELECT err($$SELECT lifecycle.purge('no_pk')$$);
SELECT err($$SELECT lifecycle.purge('accounts', '-1 day')$$);
SELECT err($$SELECT lifecycle.soft_unique('accounts', '{}')$$);
SELECT err($$SELECT lifecycle.soft_unique('accounts', '{nope}')$$);
SELECT err($$SELECT lifecycle.soft_unique('no_pk', '{a}')$$);
SELECT attname FROM pg_attribute WHERE attrelid = 'no_pk'::regclass AND attnum > 0;
SELECT tbl FROM lifecycle.soft_delete_tables ORDER BY tbl::text;

-- Disable: DELETE is hard again; the columns and soft-deleted rows stay.
SELECT lifecycle.soft_delete_disable('links');
\set QUIET off
DELETE FROM links WHERE id = 2;
\set QUIET on
SELECT id, deleted_at IS NOT NULL AS deleted FROM links;
-- Dropping a table forgets it.
DROP TABLE links;
SELECT count(*) FROM lifecycle.soft_delete_tables WHERE tbl::text = 'links';
-- pg_dump keeps the configuration.
SELECT 'lifecycle.soft_delete_tables'::regclass::oid = ANY (extconfig) AS dumped
  FROM pg_extension WHERE extname = 'pg_lifecycle';

-- ORMs that delete children themselves (one DELETE per child, then the
-- parent, in one transaction; the key has no ON DELETE action): one restore of
-- the parent brings them all back.  Children deleted by an earlier transaction
-- stay deleted.
CREATE TABLE orm_users (id int PRIMARY KEY);
CREATE TABLE orm_posts (id int PRIMARY KEY, user_id int NOT NULL REFERENCES orm_users);
CREATE TABLE orm_comments (id int PRIMARY KEY, post_id int NOT NULL REFERENCES orm_posts);
INSERT INTO orm_users VALUES (1), (2);
INSERT INTO orm_posts VALUES (10, 1), (11, 1), (12, 1), (20, 2);
INSERT INTO orm_comments VALUES (100, 10), (101, 10), (110, 11);
SELECT lifecycle.soft_delete_enable('orm_users'), lifecycle.soft_delete_enable('orm_posts'),
       lifecycle.soft_delete_enable('orm_comments');
DELETE FROM orm_posts WHERE id = 12;                    -- an earlier transaction
BEGIN;
DELETE FROM orm_comments WHERE id = 100;
DELETE FROM orm_comments WHERE id = 101;
DELETE FROM orm_comments WHERE id = 110;
DELETE FROM orm_posts WHERE id = 10;
DELETE FROM orm_posts WHERE id = 11;
DELETE FROM orm_users WHERE id = 1;
DELETE FROM orm_users WHERE id = 2 AND false;          -- nothing
COMMIT;
SELECT lifecycle.restore('orm_users', 1) AS restored;  -- user 1, posts 10 and 11, comments 100, 101, 110
SELECT (SELECT count(*) FROM orm_users) AS users, (SELECT array_agg(id ORDER BY id) FROM orm_posts) AS posts,
       (SELECT count(*) FROM orm_comments) AS comments;  -- post 12 stays deleted
-- The restrict check of a key sees rows the same statement soft-deleted, as a
-- real foreign key does: a parent and its only child, a row referencing itself.
DELETE FROM orm_posts WHERE id IN (20);
DELETE FROM orm_users WHERE id = 2;                     -- its only post was deleted just before
INSERT INTO orm_users VALUES (3);
INSERT INTO orm_posts VALUES (30, 3);
DELETE FROM orm_users WHERE id = 3;                     -- a live post: 23503
DELETE FROM orm_posts WHERE id = 30 OR id = 3;
WITH d AS (DELETE FROM orm_users WHERE id = 3 RETURNING id) SELECT count(*) AS parent_after_child FROM d;
CREATE TABLE orm_tree (id int PRIMARY KEY, parent_id int REFERENCES orm_tree);
INSERT INTO orm_tree VALUES (1, NULL), (2, 1), (3, 3);
SELECT lifecycle.soft_delete_enable('orm_tree');
DELETE FROM orm_tree WHERE id IN (1, 2);                -- a parent with its only child, in one statement
DELETE FROM orm_tree WHERE id = 3;                      -- a row that references itself
SELECT count(*) AS tree_left FROM orm_tree;
-- A user's BEFORE UPDATE trigger that writes (a history table) does not split
-- one DELETE into several events.
CREATE TABLE orm_history (item int, at timestamptz DEFAULT now());
CREATE TABLE orm_items (id int PRIMARY KEY);
CREATE FUNCTION orm_items_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO orm_history (item) VALUES (OLD.id); RETURN NEW; END $$;
CREATE TRIGGER history BEFORE UPDATE ON orm_items FOR EACH ROW EXECUTE FUNCTION orm_items_history();
INSERT INTO orm_items SELECT generate_series(1, 5);
SELECT lifecycle.soft_delete_enable('orm_items');
DELETE FROM orm_items;
SET lifecycle.include_deleted = on;
SELECT count(DISTINCT delete_event) AS events, count(*) AS rows FROM orm_items;
RESET lifecycle.include_deleted;
SELECT count(*) AS history_rows FROM orm_history;
-- A hard DELETE on a table without soft delete, of a row that no row of a
-- soft-delete table references, is fine even with an ON DELETE CASCADE key
-- from one (only a row the cascade would remove is refused).
CREATE TABLE orm_plain (id int PRIMARY KEY);
CREATE TABLE orm_kept (id int PRIMARY KEY, plain_id int REFERENCES orm_plain ON DELETE CASCADE);
INSERT INTO orm_plain VALUES (1), (2);
INSERT INTO orm_kept VALUES (1, 1);
SELECT lifecycle.soft_delete_enable('orm_kept');
DELETE FROM orm_plain WHERE id = 2;
SELECT err('DELETE FROM orm_plain WHERE id = 1') AS cascade_into_protected;
SELECT array_agg(id ORDER BY id) AS plain_left FROM orm_plain;
DROP TABLE orm_comments, orm_posts, orm_users, orm_tree, orm_items, orm_history, orm_kept, orm_plain;
DROP FUNCTION orm_items_history();

-- An application's own soft delete (the seeds' repository, Sequelize paranoid,
-- TypeORM softDelete: UPDATE ... SET deleted_at = now()) is recorded like a
-- DELETE: an event, an actor, the cascade; restore() undoes it exactly.
CREATE TABLE app_users (id int PRIMARY KEY, deleted_at timestamptz);
CREATE TABLE app_tokens (id int PRIMARY KEY, user_id int REFERENCES app_users ON DELETE CASCADE);
INSERT INTO app_users VALUES (1, NULL), (2, NULL), (3, now() - interval '1 day');   -- 3: deleted before enabling
INSERT INTO app_tokens VALUES (10, 1), (11, 1), (20, 2);
SELECT lifecycle.soft_delete_enable('app_users'), lifecycle.soft_delete_enable('app_tokens');
SET lifecycle.actor = 'app:admin';
UPDATE app_users SET deleted_at = now() WHERE id = 1 AND deleted_at IS NULL;
RESET lifecycle.actor;
SET lifecycle.include_deleted = on;
SELECT 'user' AS t, id, deleted_by, delete_event IS NOT NULL AS has_event FROM app_users WHERE id IN (1, 3)
UNION ALL SELECT 'token', id, deleted_by, delete_event IS NOT NULL FROM app_tokens WHERE user_id = 1 ORDER BY 1, 2;
SELECT count(DISTINCT delete_event) AS one_event FROM (SELECT delete_event FROM app_users WHERE id = 1
                                                       UNION ALL SELECT delete_event FROM app_tokens WHERE user_id = 1) e;
RESET lifecycle.include_deleted;
SELECT lifecycle.restore('app_users', 1) AS restored;                  -- the user and its two tokens
-- ... and its own restore (UPDATE ... SET deleted_at = NULL, on a row it can
-- see with include_deleted) restores the event's cascade too.
UPDATE app_users SET deleted_at = now() WHERE id = 1;
SET lifecycle.include_deleted = on;
UPDATE app_users SET deleted_at = NULL WHERE id = 1;
SELECT id, deleted_at IS NULL AS live, delete_event IS NULL AS no_event FROM app_tokens ORDER BY id;
RESET lifecycle.include_deleted;
-- A row deleted before enabling stays deleted; it is restored on its own.
SELECT count(*) AS visible_users FROM app_users;
SELECT lifecycle.restore('app_users', 3) AS restored_alone;
-- Restoring a child by UPDATE while its parent is still deleted: 23503.
DELETE FROM app_users WHERE id = 2;
SET lifecycle.include_deleted = on;
SELECT err('UPDATE app_tokens SET deleted_at = NULL WHERE id = 20') AS child_before_parent;
RESET lifecycle.include_deleted;
-- hide => false: for ORMs that filter deleted rows themselves.
SELECT lifecycle.soft_delete_enable('app_tokens', hide => false);
SELECT count(*) AS with_deleted, count(*) FILTER (WHERE deleted_at IS NULL) AS live FROM app_tokens;
DROP TABLE app_tokens, app_users;

-- deleted_by may be varchar (an ORM's String column).
CREATE TABLE vc_items (id int PRIMARY KEY, deleted_at timestamptz, deleted_by varchar(32), delete_event bigint);
INSERT INTO vc_items VALUES (1), (2);
SELECT lifecycle.soft_delete_enable('vc_items');
SET lifecycle.actor = 'api:9';
DELETE FROM vc_items WHERE id = 1;
UPDATE vc_items SET deleted_at = now() WHERE id = 2;
RESET lifecycle.actor;
SET lifecycle.include_deleted = on;
SELECT id, deleted_by, pg_typeof(deleted_by) FROM vc_items ORDER BY id;
RESET lifecycle.include_deleted;
DROP TABLE vc_items;

-- A DEFERRABLE INITIALLY DEFERRED (NO ACTION) key is checked at commit, as the
-- key itself would be: an ORM may delete the parent before its children.
CREATE TABLE def_orders (id int PRIMARY KEY);
CREATE TABLE def_lines (id int PRIMARY KEY,
                        order_id int REFERENCES def_orders DEFERRABLE INITIALLY DEFERRED);
INSERT INTO def_orders VALUES (1), (2), (3);
INSERT INTO def_lines VALUES (10, 1), (20, 2), (30, 3);
SELECT lifecycle.soft_delete_enable('def_orders'), lifecycle.soft_delete_enable('def_lines');
BEGIN;
DELETE FROM def_orders WHERE id = 1;                   -- parent first
DELETE FROM def_lines WHERE order_id = 1;              -- then its line
COMMIT;
BEGIN;
DELETE FROM def_orders WHERE id = 2;                   -- its line stays live
SELECT 'still in the transaction' AS checked_at_commit;
COMMIT;                                                -- 23503 now
BEGIN;
DELETE FROM def_orders WHERE id = 3;
SAVEPOINT s;
DELETE FROM def_lines WHERE order_id = 3;
ROLLBACK TO s;                                          -- the line is live again
COMMIT;                                                -- 23503
SELECT (SELECT array_agg(id ORDER BY id) FROM def_orders) AS orders_left,
       (SELECT array_agg(id ORDER BY id) FROM def_lines) AS lines_left;
DROP TABLE def_lines, def_orders;

-- restore's id as a driver binds it: untyped, text, another integer width, or
-- a parameter; converted to the key's type (22P02 naming the column otherwise).
CREATE TABLE bound_ids (id int PRIMARY KEY);
CREATE TABLE bound_uuids (id uuid PRIMARY KEY);
INSERT INTO bound_ids SELECT generate_series(1, 6);
INSERT INTO bound_uuids VALUES ('00000000-0000-0000-0000-00000000000a');
SELECT lifecycle.soft_delete_enable('bound_ids'), lifecycle.soft_delete_enable('bound_uuids');
DELETE FROM bound_ids;
DELETE FROM bound_uuids;
SELECT lifecycle.restore('bound_ids', '1') AS untyped, lifecycle.restore('bound_ids', '2'::text) AS text_id,
       lifecycle.restore('bound_ids', '3'::varchar) AS varchar_id, lifecycle.restore('bound_ids', 4::bigint) AS bigint_id,
       lifecycle.restore('bound_ids', 5::smallint) AS smallint_id;
PREPARE restore_bound AS SELECT lifecycle.restore('bound_ids', $1);
EXECUTE restore_bound('6');
SELECT lifecycle.restore('bound_uuids', '00000000-0000-0000-0000-00000000000a') AS uuid_as_text;
SELECT count(*) AS all_back FROM bound_ids;
SELECT err($$SELECT lifecycle.restore('bound_ids', 'seven')$$) AS not_an_integer;
SELECT err($$SELECT lifecycle.restore('bound_ids', 99999999999::bigint)$$) AS out_of_range;
SELECT err($$SELECT lifecycle.restore('bound_uuids', '42')$$) AS not_a_uuid;
DROP TABLE bound_ids, bound_uuids;

-- A legacy flag (the seeds' is_deleted) kept in step with deleted_at.
CREATE TABLE flag_orders (id int PRIMARY KEY, note text, is_deleted boolean NOT NULL DEFAULT false,
                          deleted_at timestamptz);
CREATE TABLE flag_lines (id int PRIMARY KEY, order_id int REFERENCES flag_orders ON DELETE CASCADE,
                         is_deleted boolean, deleted_at timestamptz);
-- Rows out of step before enabling: flagged only, dated only, both, neither (one NULL flag).
INSERT INTO flag_orders VALUES (1, 'live', false, NULL), (2, 'flag only', true, NULL),
                               (3, 'date only', false, '2020-01-01'), (4, 'both', true, '2020-01-01'),
                               (5, 'live', false, NULL), (6, 'live', false, NULL);
INSERT INTO flag_lines VALUES (10, 1, NULL, NULL), (11, 5, false, NULL), (12, 5, false, NULL), (13, 6, false, NULL);
SELECT err($$SELECT lifecycle.soft_delete_enable('flag_orders', flag => 'gone')$$) AS no_such_column;
SELECT err($$SELECT lifecycle.soft_delete_enable('flag_orders', flag => 'note')$$) AS not_boolean;
SELECT err($$SELECT lifecycle.soft_delete_enable('flag_orders', flag => 'deleted_at')$$) AS ours;
SELECT err($$SELECT lifecycle.soft_delete_enable('flag_orders', flag => 'ctid')$$) AS system_column;
SELECT count(*) AS not_registered FROM lifecycle.soft_delete_tables WHERE tbl = 'flag_orders'::regclass;
SELECT lifecycle.soft_delete_enable('flag_orders', flag => 'is_deleted'),
       lifecycle.soft_delete_enable('flag_lines', flag => 'is_deleted');
SELECT tbl, flag FROM lifecycle.soft_delete_tables WHERE flag IS NOT NULL ORDER BY tbl::text;
SET lifecycle.include_deleted = on;
SELECT id, is_deleted, deleted_at IS NOT NULL AS deleted, deleted_at = '2020-01-01' AS kept_its_date
  FROM flag_orders ORDER BY id;
SELECT id, is_deleted FROM flag_lines ORDER BY id;
RESET lifecycle.include_deleted;
SELECT id FROM flag_orders ORDER BY id;                    -- 1, 5, 6 visible
-- A DELETE sets the flag (and its cascade the children's); restore clears it.
\set QUIET off
DELETE FROM flag_orders WHERE id = 5;
\set QUIET on
SET lifecycle.include_deleted = on;
SELECT id, is_deleted, deleted_at IS NOT NULL AS deleted FROM flag_lines ORDER BY id;
RESET lifecycle.include_deleted;
SELECT lifecycle.restore('flag_orders', 5) AS restored;
SELECT id, is_deleted, deleted_at IS NULL AS live FROM flag_lines ORDER BY id;
-- The application's own soft delete through the flag alone: deleted_at, an
-- event, an actor and the cascade follow; its restore through the flag brings the event back.
SELECT set_config('lifecycle.actor', 'app:7', false);
\set QUIET off
UPDATE flag_orders SET is_deleted = true WHERE id = 6;
\set QUIET on
SET lifecycle.include_deleted = on;
SELECT id, is_deleted, deleted_at IS NOT NULL AS deleted, deleted_by, delete_event IS NOT NULL AS has_event
  FROM flag_orders WHERE id = 6;
SELECT id, is_deleted, deleted_at IS NOT NULL AS deleted, (SELECT delete_event FROM flag_orders WHERE id = 6) = l_event AS same_event
  FROM (SELECT id, is_deleted, deleted_at, delete_event AS l_event FROM flag_lines WHERE id = 13) l;
\set QUIET off
UPDATE flag_orders SET is_deleted = false WHERE id = 6;
\set QUIET on
SELECT id, is_deleted, deleted_at, deleted_by, delete_event FROM flag_orders WHERE id = 6;
SELECT id, is_deleted, deleted_at, delete_event FROM flag_lines WHERE id = 13;
RESET lifecycle.include_deleted;
RESET lifecycle.actor;
-- deleted_at alone (the seeds' soft_delete) sets the flag; an INSERT with the flag set inserts a deleted row;
-- an update that changes neither keeps them as they are.
UPDATE flag_orders SET deleted_at = now() WHERE id = 1;       -- and its line 10, by the cascade
INSERT INTO flag_orders (id, note, is_deleted) VALUES (7, 'inserted deleted', true);
SET lifecycle.include_deleted = on;
UPDATE flag_orders SET note = note || '.' WHERE id IN (1, 7);
SELECT id, is_deleted, deleted_at IS NOT NULL AS deleted FROM flag_orders WHERE id IN (1, 7) ORDER BY id;
SELECT id, is_deleted, deleted_at IS NOT NULL AS deleted FROM flag_lines WHERE id = 10;
RESET lifecycle.include_deleted;
-- The flag is protected like the three columns; disabling, or enabling again without it, removes its trigger.
SELECT err($$ALTER TABLE flag_orders DROP COLUMN is_deleted$$) AS drop_flag;
SELECT err($$ALTER TABLE flag_orders RENAME COLUMN is_deleted TO gone$$) AS rename_flag;
SELECT err($$ALTER TABLE flag_orders ALTER COLUMN is_deleted DROP DEFAULT,
                ALTER COLUMN is_deleted TYPE int USING is_deleted::int$$) AS retype_flag;
SELECT err($$DROP TRIGGER lifecycle_soft_delete_flag ON flag_orders$$) AS drop_trigger;
SELECT err($$ALTER TABLE flag_orders DISABLE TRIGGER lifecycle_soft_delete_flag$$) AS disable_trigger;
SELECT err($$SELECT lifecycle.soft_delete_flag()$$) AS not_callable;
SELECT lifecycle.soft_delete_enable('flag_lines');
SELECT flag IS NULL AS no_flag, (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'flag_lines'::regclass
                                  AND tgname = 'lifecycle_soft_delete_flag') AS flag_triggers
  FROM lifecycle.soft_delete_tables WHERE tbl = 'flag_lines'::regclass;
SELECT lifecycle.soft_delete_disable('flag_orders');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'flag_orders'::regclass AND tgname LIKE 'lifecycle%';
ALTER TABLE flag_orders DROP COLUMN is_deleted;
DROP TABLE flag_lines, flag_orders;
-- A partitioned table: the flag trigger is on every partition, also new ones.
CREATE TABLE flag_parts (id int, region text, is_deleted boolean NOT NULL DEFAULT false,
                         PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE flag_parts_eu PARTITION OF flag_parts FOR VALUES IN ('eu');
SELECT lifecycle.soft_delete_enable('flag_parts', flag => 'is_deleted');
CREATE TABLE flag_parts_us PARTITION OF flag_parts FOR VALUES IN ('us');
INSERT INTO flag_parts VALUES (1, 'eu'), (2, 'us'), (3, 'us');
DELETE FROM flag_parts WHERE id IN (1, 2);
UPDATE flag_parts_us SET is_deleted = true WHERE id = 3;
SET lifecycle.include_deleted = on;
SELECT tableoid::regclass AS part, id, is_deleted, deleted_at IS NOT NULL AS deleted FROM flag_parts ORDER BY id;
RESET lifecycle.include_deleted;
SELECT err($$ALTER TABLE flag_parts_us DISABLE TRIGGER lifecycle_soft_delete_flag$$) AS disable_on_partition;
DROP TABLE flag_parts;

-- Purge keeps a deleted row that a live row of a soft-delete table still
-- references, also through a SET NULL key: the live row's link is never lost.
-- (Found by the model-based test, test/t/041_softdelete_model.pl.)
CREATE TABLE pn_parents (id int PRIMARY KEY);
CREATE TABLE pn_children (id int PRIMARY KEY, parent_id int REFERENCES pn_parents ON DELETE SET NULL);
INSERT INTO pn_parents VALUES (1), (2);
INSERT INTO pn_children VALUES (10, 1), (20, 2);
SELECT lifecycle.soft_delete_enable('pn_parents'), lifecycle.soft_delete_enable('pn_children');
DELETE FROM pn_parents;                           -- SET NULL: the children stay, linked
DELETE FROM pn_children WHERE id = 20;            -- 20 deleted too; 10 stays live
SET lifecycle.include_deleted = on;
UPDATE pn_parents SET deleted_at = now() - interval '1 day';
RESET lifecycle.include_deleted;
SELECT lifecycle.purge('pn_parents', '1 hour') AS purged;     -- parent 2 only
SET lifecycle.include_deleted = on;
SELECT id FROM pn_parents ORDER BY id;
SELECT id, parent_id, deleted_at IS NOT NULL AS deleted FROM pn_children ORDER BY id;
RESET lifecycle.include_deleted;
DROP TABLE pn_children, pn_parents;

-- Purge removes a row and its soft-deleted RESTRICT children in one statement:
-- a child's own SET NULL action on the row used to update it first, so the row
-- was not found any more (purge returned 0 and kept it, without its child).
-- (Found by the model-based test.)
CREATE TABLE ps_parents (id int PRIMARY KEY, child_id int);
CREATE TABLE ps_children (id int PRIMARY KEY, parent_id int REFERENCES ps_parents ON DELETE RESTRICT);
ALTER TABLE ps_parents ADD FOREIGN KEY (child_id) REFERENCES ps_children ON DELETE SET NULL;
INSERT INTO ps_parents VALUES (1, NULL);
INSERT INTO ps_children VALUES (10, 1);
UPDATE ps_parents SET child_id = 10;
SELECT lifecycle.soft_delete_enable('ps_parents'), lifecycle.soft_delete_enable('ps_children');
DELETE FROM ps_children;
DELETE FROM ps_parents;
SET lifecycle.include_deleted = on;
UPDATE ps_parents SET deleted_at = now() - interval '1 day';
SELECT lifecycle.purge('ps_parents', '1 hour') AS purged;
SELECT (SELECT count(*) FROM ps_parents) AS parents_left, (SELECT count(*) FROM ps_children) AS children_left;
RESET lifecycle.include_deleted;
DROP TABLE ps_children, ps_parents;

-- When purge goes row by row (a row cannot go), a row updated by the
-- foreign-key action of a row purged before it (here its link set to NULL) is
-- still found and purged (it was kept, its ctid being stale).  (Found by the
-- model-based test.)
CREATE TABLE pr_nodes (id int PRIMARY KEY, parent_id int REFERENCES pr_nodes ON DELETE SET NULL);
INSERT INTO pr_nodes VALUES (1, NULL), (2, 1), (3, NULL);
SELECT lifecycle.soft_delete_enable('pr_nodes');
CREATE FUNCTION pr_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'node % is kept', OLD.id; END $$;
CREATE TRIGGER pr_keep BEFORE DELETE ON pr_nodes FOR EACH ROW WHEN (OLD.id = 3) EXECUTE FUNCTION pr_keep();
DELETE FROM pr_nodes;
SET lifecycle.include_deleted = on;
UPDATE pr_nodes SET deleted_at = now() - interval '1 day';
SELECT lifecycle.purge('pr_nodes', '1 hour') AS purged;     -- 1 and 2; 3 is kept by its trigger
SELECT id FROM pr_nodes ORDER BY id;
RESET lifecycle.include_deleted;
DROP TABLE pr_nodes;
DROP FUNCTION pr_keep();

-- An application's own restore checks the parents once its event's rows are
-- back, as restore() does: a user's comment on the user's own post comes back
-- with both (it was refused when the comment came back before the post).  A
-- parent really still deleted is refused.  (Found by the model-based test.)
CREATE TABLE ar_users (id int PRIMARY KEY);
CREATE TABLE ar_comments (id int PRIMARY KEY, user_id int REFERENCES ar_users ON DELETE CASCADE, post_id int);
CREATE TABLE ar_posts (id int PRIMARY KEY, user_id int REFERENCES ar_users ON DELETE CASCADE);
ALTER TABLE ar_comments ADD FOREIGN KEY (post_id) REFERENCES ar_posts ON DELETE CASCADE;
INSERT INTO ar_users VALUES (1);
INSERT INTO ar_posts VALUES (10, 1);
INSERT INTO ar_comments VALUES (100, 1, 10);
SELECT lifecycle.soft_delete_enable('ar_users'), lifecycle.soft_delete_enable('ar_posts'),
       lifecycle.soft_delete_enable('ar_comments');
DELETE FROM ar_users WHERE id = 1;                      -- the post and the comment go with it
SET lifecycle.include_deleted = on;
\set QUIET off
UPDATE ar_users SET deleted_at = NULL WHERE id = 1;
\set QUIET on
SELECT (SELECT deleted_at IS NULL FROM ar_users) AS user_back, (SELECT deleted_at IS NULL FROM ar_posts) AS post_back,
       (SELECT deleted_at IS NULL FROM ar_comments) AS comment_back;
DELETE FROM ar_posts WHERE id = 10;                     -- the comment goes with the post
DELETE FROM ar_users WHERE id = 1;                      -- another event: the user only
SELECT err($$UPDATE ar_posts SET deleted_at = NULL WHERE id = 10$$) AS user_still_deleted;
RESET lifecycle.include_deleted;
DROP TABLE ar_comments, ar_posts, ar_users;

-- An application's own restore of a row deleted before soft delete was
-- enabled (no event) checks its parent too, as restore() does (the trigger
-- did not fire for it).  (Found by the model-based test.)
CREATE TABLE ae_parents (id int PRIMARY KEY, deleted_at timestamptz);
CREATE TABLE ae_children (id int PRIMARY KEY, parent_id int REFERENCES ae_parents, deleted_at timestamptz);
INSERT INTO ae_parents VALUES (1, now() - interval '1 day');
INSERT INTO ae_children VALUES (10, 1, now() - interval '1 day'), (11, 1, now() - interval '1 day');
SELECT lifecycle.soft_delete_enable('ae_parents'), lifecycle.soft_delete_enable('ae_children');
SET lifecycle.include_deleted = on;
SELECT err($$SELECT lifecycle.restore('ae_children', 10)$$) AS by_restore;
SELECT err($$UPDATE ae_children SET deleted_at = NULL WHERE id = 11$$) AS by_update;
UPDATE ae_parents SET deleted_at = NULL WHERE id = 1;
\set QUIET off
UPDATE ae_children SET deleted_at = NULL WHERE id = 11;      -- the parent is back: fine
\set QUIET on
SELECT id, deleted_at IS NULL AS live, delete_event FROM ae_children ORDER BY id;
RESET lifecycle.include_deleted;
DROP TABLE ae_children, ae_parents;

-- Rows with a DEFERRABLE INITIALLY DEFERRED key that this transaction wrote:
-- PostgreSQL queues a deferred check for each UPDATE of such a row, and
-- refuses to queue one inside a security-restricted operation (42501).  Our
-- cascade, event stamping and restore of such rows run like PostgreSQL's own
-- foreign-key actions (as the owner, outside its row security), so an ORM's
-- "insert, then delete" transaction works, and the deferred checks still run
-- at commit.  A user's deferred constraint trigger on the child fires too.
CREATE TABLE dk_parents (id int PRIMARY KEY);
CREATE TABLE dk_children (id int PRIMARY KEY,
                          parent_id int REFERENCES dk_parents ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE dk_log (what text);
CREATE FUNCTION dk_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO dk_log VALUES (TG_OP || ' ' || NEW.id); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER dk_deferred AFTER UPDATE ON dk_children DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION dk_note();
SELECT lifecycle.soft_delete_enable('dk_parents'), lifecycle.soft_delete_enable('dk_children');
GRANT SELECT, INSERT, UPDATE, DELETE ON dk_parents, dk_children TO sd_app;
GRANT INSERT ON dk_log TO sd_app;
SET ROLE sd_app;
BEGIN;
INSERT INTO dk_parents VALUES (1), (2);
INSERT INTO dk_children VALUES (10, 1), (11, 1), (20, 2);
\set QUIET off
DELETE FROM dk_parents WHERE id = 1;                              -- cascade to 10 and 11
UPDATE dk_children SET deleted_at = now() WHERE id = 20;          -- the application's own soft delete
\set QUIET on
COMMIT;
RESET ROLE;
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted, delete_event IS NOT NULL AS has_event FROM dk_children ORDER BY id;
SELECT what, count(*) FROM dk_log GROUP BY what ORDER BY what;   -- the deferred trigger ran at commit
TRUNCATE dk_log;
SET ROLE sd_app;
BEGIN;
SELECT lifecycle.restore('dk_parents', 1) AS restored;            -- with 10 and 11 (20 has another parent)
UPDATE dk_children SET parent_id = 2 WHERE id = 10;                -- 10 written in this transaction
UPDATE dk_children SET deleted_at = now() WHERE id = 10;          -- the application's soft delete of it
UPDATE dk_children SET deleted_at = NULL WHERE id IN (10, 20);    -- and its restore, with 20
COMMIT;
RESET ROLE;
SELECT id, parent_id, deleted_at IS NOT NULL AS deleted, delete_event IS NOT NULL AS has_event
  FROM dk_children ORDER BY id;
SELECT what, count(*) FROM dk_log GROUP BY what ORDER BY what;
RESET lifecycle.include_deleted;
-- The deferred foreign-key check still runs at commit.
SET ROLE sd_app;
BEGIN;
INSERT INTO dk_children VALUES (30, 99);                          -- no such parent
DELETE FROM dk_children WHERE id = 30;                            -- soft: the row stays
COMMIT;                                                           -- 23503 here
RESET ROLE;
DROP TABLE dk_children, dk_parents, dk_log;
DROP FUNCTION dk_note();
-- That work runs as the child table's owner, as a foreign key's cascade does:
-- its trigger sees that owner as current_user and may not change the session's
-- identity, whoever deleted the parent (here a superuser).
CREATE TABLE dk_owned (id int PRIMARY KEY);
INSERT INTO dk_owned VALUES (1);
SELECT lifecycle.soft_delete_enable('dk_owned');
GRANT REFERENCES ON dk_owned TO sd_app;
GRANT CREATE ON SCHEMA public TO sd_app;
SET ROLE sd_app;
CREATE TABLE dk_theirs (id int PRIMARY KEY, owned_id int REFERENCES dk_owned ON DELETE CASCADE);
CREATE TABLE dk_seen (who text, tried text);
INSERT INTO dk_theirs VALUES (10, 1);
CREATE FUNCTION dk_who() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE tried text := 'allowed';
BEGIN
    BEGIN
        EXECUTE 'SET SESSION AUTHORIZATION DEFAULT';
    EXCEPTION WHEN OTHERS THEN tried := SQLSTATE || ' ' || SQLERRM;
    END;
    INSERT INTO dk_seen VALUES (current_user, tried);
    RETURN NULL;
END $$;
CREATE TRIGGER dk_who AFTER UPDATE ON dk_theirs FOR EACH ROW EXECUTE FUNCTION dk_who();
SELECT lifecycle.soft_delete_enable('dk_theirs');
RESET ROLE;
DELETE FROM dk_owned WHERE id = 1;
SELECT who, tried, current_user = session_user AS caller_unchanged FROM dk_seen;
DROP TABLE dk_theirs, dk_seen, dk_owned;
DROP FUNCTION dk_who();
REVOKE CREATE ON SCHEMA public FROM sd_app;
-- enabling a table granted its owner EXECUTE on the trigger functions
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_guard(), lifecycle.soft_delete_cascade(),
                           lifecycle.soft_delete_flag() FROM sd_app;

-- An application's restore of several rows in one UPDATE checks the parents
-- when the statement is done: a row whose parent comes back with another
-- row's event is fine whichever row's trigger runs first; a parent left
-- deleted is refused, and the whole statement with it.
CREATE TABLE ro_nodes (id int PRIMARY KEY, parent_id int REFERENCES ro_nodes ON DELETE CASCADE, v int DEFAULT 0);
INSERT INTO ro_nodes VALUES (1, NULL), (2, 1), (3, 2);
SELECT lifecycle.soft_delete_enable('ro_nodes');
DELETE FROM ro_nodes WHERE id = 3;                         -- one event: 3
DELETE FROM ro_nodes WHERE id = 1;                         -- another: 1 and, by cascade, 2
SET lifecycle.include_deleted = on;
UPDATE ro_nodes SET v = v + 1 WHERE id = 1;                -- 1 now last in the heap
SELECT array_agg(id ORDER BY ctid) AS heap_order FROM ro_nodes;
SET enable_indexscan = off; SET enable_bitmapscan = off;    -- the UPDATE reaches rows in heap order
\set QUIET off
UPDATE ro_nodes SET deleted_at = NULL WHERE id IN (1, 3);  -- 3's trigger first; 2 comes back with 1
\set QUIET on
SELECT id, deleted_at IS NULL AS live FROM ro_nodes ORDER BY id;
DELETE FROM ro_nodes WHERE id = 3;
DELETE FROM ro_nodes WHERE id = 2;
SELECT err($$UPDATE ro_nodes SET deleted_at = NULL WHERE id IN (1, 3)$$) AS parent_left_deleted;
SELECT id, deleted_at IS NULL AS live FROM ro_nodes ORDER BY id;      -- nothing changed
BEGIN;
SAVEPOINT s;
SELECT err($$UPDATE ro_nodes SET deleted_at = NULL WHERE id = 3$$) AS in_savepoint;
ROLLBACK TO SAVEPOINT s;
UPDATE ro_nodes SET deleted_at = NULL WHERE id IN (2, 3);
COMMIT;
RESET enable_indexscan; RESET enable_bitmapscan;
SELECT id, deleted_at IS NULL AS live FROM ro_nodes ORDER BY id;
RESET lifecycle.include_deleted;
DROP TABLE ro_nodes;

DROP TABLE accounts, orgs, teams, members, invoices, notes, audit, folders, ring_a, ring_b, event_notes, events,
           no_pk, bad_col, boards, cards, zones, sites, shops, items CASCADE;
REVOKE ALL ON SCHEMA public FROM sd_app;
DROP ROLE sd_app;
