------------------------------------------------------------------------------
-- The extension's own life cycle: dump/restore and DROP EXTENSION
------------------------------------------------------------------------------
-- Our triggers created by a restore whose dump lacked our configuration (a
-- schema-only or --schema dump) attach their table again.
CREATE FUNCTION lifecycle.on_create_trigger() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_on_create_trigger' LANGUAGE C;
-- DROP EXTENSION pg_lifecycle takes the count tables (not members) with it.
CREATE FUNCTION lifecycle.on_drop_extension() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_on_drop_extension' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.on_create_trigger(), lifecycle.on_drop_extension() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_create_trigger ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION lifecycle.on_create_trigger();
CREATE EVENT TRIGGER lifecycle_drop_extension ON ddl_command_start WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION lifecycle.on_drop_extension();
