------------------------------------------------------------------------------
-- The extension's own life cycle: dump/restore and DROP EXTENSION
------------------------------------------------------------------------------
-- Our triggers created by a restore whose dump lacked our configuration (a
-- schema-only or --schema dump) attach their table again.
CREATE FUNCTION lifecycle.extension_reattach() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_extension_reattach' LANGUAGE C;
-- DROP EXTENSION pg_lifecycle takes the count tables (not members) with it.
CREATE FUNCTION lifecycle.extension_drop() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_extension_drop' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.extension_reattach(), lifecycle.extension_drop() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_create_trigger ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION lifecycle.extension_reattach();
CREATE EVENT TRIGGER lifecycle_drop_extension ON ddl_command_start WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION lifecycle.extension_drop();
