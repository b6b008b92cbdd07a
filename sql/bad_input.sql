-- Bad calls: a trigger or event-trigger function of ours called directly (as
-- a superuser, who may execute them) is refused with PostgreSQL's SQLSTATE for
-- that, 39P01 (trigger_protocol_violated), whichever capability it belongs to.
CREATE EXTENSION pg_lifecycle;

CREATE FUNCTION sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN st || ' | ' || msg;
END $$;

SELECT p.proname, sqlstate_of(format('SELECT lifecycle.%I()', p.proname)) AS called_directly
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_lifecycle'
 WHERE p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)
   AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')
 ORDER BY p.proname;

DROP FUNCTION sqlstate_of(text);
DROP EXTENSION pg_lifecycle;
