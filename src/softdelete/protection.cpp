/*
 * protection.cpp — soft delete's protection cannot be lost by accident
 * (SPEC.md §1, "Protection cannot be lost by accident"):
 *
 *  - the triggers soft_delete_enable puts on a table — soft_delete_guard,
 *    soft_delete_cascade (row triggers, cloned to every partition by
 *    PostgreSQL) and soft_delete_truncate (a statement trigger, put on the
 *    table and on each of its partitions, new ones included) — are created
 *    and dropped here, as the extension's owner: their functions are not
 *    executable by PUBLIC;
 *  - lifecycle.soft_delete_truncate() refuses TRUNCATE of a protected table,
 *    directly or through TRUNCATE ... CASCADE, unless lifecycle.hard_delete is
 *    honoured for its owner;
 *  - lifecycle.soft_delete_ddl(), an event trigger at ddl_command_end and
 *    sql_drop, refuses DDL that would leave an enabled table unprotected:
 *    dropping, renaming or retyping deleted_at, deleted_by or delete_event
 *    (also with CASCADE), and the flag column a table was enabled with;
 *    dropping, renaming or disabling our triggers.  It
 *    gives new partitions the TRUNCATE trigger.
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "softdelete/citus.hpp"
#include "softdelete/softdelete.hpp"

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

/* Set while our own functions create or drop the triggers. */
int own_ddl_depth = 0;
struct OwnDdl {
    OwnDdl() { ++own_ddl_depth; }
    ~OwnDdl() { --own_ddl_depth; }
    OwnDdl(const OwnDdl&) = delete;
    OwnDdl& operator=(const OwnDdl&) = delete;
};

constexpr const char* guard_trigger = "lifecycle_soft_delete_guard";
constexpr const char* truncate_trigger = "lifecycle_soft_delete_truncate";

struct Column {
    const char* name;
    Oid type;
};
constexpr Column protected_columns[] = {
    {"deleted_at", TIMESTAMPTZOID}, {"deleted_by", TEXTOID}, {"delete_event", INT8OID}};

/* The table and its partitions, all levels. */
std::vector<Oid> table_and_partitions(Oid relid) {
    List* all = pg_call([relid] { return find_all_inheritors(relid, NoLock, nullptr); });
    std::vector<Oid> out;
    ListCell* lc;
    foreach (lc, all) out.push_back(lfirst_oid(lc));
    return out;
}

/* tgenabled of the trigger `name` on rel ('\0' when there is none), as the
 * catalogs are now (the DDL being checked included). */
char trigger_state(Oid rel, const char* name) {
    Oid types[2] = {OIDOID, NAMEOID};
    Datum args[2] = {ObjectIdGetDatum(rel),
                     pg_call([name] { return DirectFunctionCall1(namein, CStringGetDatum(name)); })};
    bridge::execute_fresh(
        "SELECT tgenabled FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1 "
        "AND tgname OPERATOR(pg_catalog.=) $2",
        2, types, args, true, 1);
    if (bridge::processed_rows() == 0) return '\0';
    return DatumGetChar(bridge::required_datum(0, 1));
}

/* The row triggers are cloned to each new partition by whoever creates it,
 * which PostgreSQL allows only with EXECUTE on their functions: the owner of
 * an enabled table gets it (and nobody else; the functions act only on
 * enabled tables anyway). */
void grant_trigger_functions(Oid relid) {
    Oid owner = bridge::relation_owner(relid);
    std::string role = bridge::quote_ident(pg_call([owner] { return std::string(GetUserNameFromId(owner, false)); }));
    for (const char* fn : {"soft_delete_guard", "soft_delete_cascade", "soft_delete_flag"}) {
        bool needed = pg_call([owner, fn] {
            List* name = list_make2(makeString(pstrdup("lifecycle")), makeString(pstrdup(fn)));
            Oid f = LookupFuncName(name, 0, nullptr, true);
            return OidIsValid(f) && object_aclcheck(ProcedureRelationId, f, owner, ACL_EXECUTE) != ACLCHECK_OK;
        });
        if (needed) bridge::execute_sql(fmt::format("GRANT EXECUTE ON FUNCTION lifecycle.{}() TO {}", fn, role), false);
    }
}

/* Whether the installed SQL objects have the triggers added in 0.2 (a
 * database still at 0.1 until ALTER EXTENSION pg_lifecycle UPDATE). */
bool truncate_function_exists() {
    return pg_call([] {
        List* name = list_make2(makeString(pstrdup("lifecycle")), makeString(pstrdup("soft_delete_truncate")));
        return OidIsValid(LookupFuncName(name, 0, nullptr, true));
    });
}

/* The cascade trigger: in 0.1 it fired for soft deletes only; from 0.2 also
 * for an application's own soft delete by UPDATE (no event: it gets one) and
 * its own restore by UPDATE (delete_event left as it was, or a row deleted
 * without an event, before enabling: its parents are checked). */
constexpr const char* cascade_when_01 =
    "OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL AND lifecycle._soft_delete_referenced(OLD.tableoid)";
constexpr const char* cascade_when_02 =
    "(OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL AND (NEW.delete_event IS NULL "
    "OR lifecycle._soft_delete_referenced(OLD.tableoid))) OR (OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL "
    "AND (OLD.delete_event IS NULL OR NEW.delete_event IS NOT NULL))";

void create_truncate_trigger(Oid rel) {
    bridge::execute_sql(fmt::format("CREATE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT "
                                    "EXECUTE FUNCTION lifecycle.soft_delete_truncate()",
                                    truncate_trigger, bridge::qualified_relation_name(rel)),
                        false);
}

[[noreturn]] void refuse(Oid relid, const std::string& what) {
    std::string table = bridge::qualified_relation_name(relid);
    throw Error(sqlstate::object_not_in_prerequisite_state,
                fmt::format("{} would remove the soft-delete protection of table {}", what, table),
                "pg_lifecycle keeps deleted rows in deleted_at, deleted_by and delete_event, and its triggers keep "
                "DELETE and TRUNCATE from removing rows.",
                fmt::format("Call lifecycle.soft_delete_disable('{}') first.", table));
}

/* The flag column a table was enabled with (none before 0.2's SQL objects). */
std::optional<std::string> registered_flag(Oid relid) {
    Oid registry = pg_call([] { return get_relname_relid("soft_delete_tables", bridge::extension_schema()); });
    if (!OidIsValid(registry) || pg_call([registry] { return get_attnum(registry, "flag"); }) == InvalidAttrNumber) {
        return std::nullopt;
    }
    Oid type = REGCLASSOID;
    Datum key = ObjectIdGetDatum(relid);
    bridge::execute_fresh(
        "SELECT flag::pg_catalog.text FROM lifecycle.soft_delete_tables WHERE tbl OPERATOR(pg_catalog.=) $1", 1, &type,
        &key, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return bridge::result_text(0, 1);
}

/* Every enabled table still has its columns and enabled triggers; new
 * partitions get the TRUNCATE trigger. */
void check_all() {
    bridge::SpiConnection spi;
    bool truncate_trigger_expected = truncate_function_exists();
    for (Oid relid : registered_tables()) {
        if (pg_call([relid] { return get_rel_relkind(relid); }) == '\0') continue; /* dropped */
        for (const Column& col : protected_columns) {
            AttrNumber att = pg_call([&] { return get_attnum(relid, col.name); });
            if (att == InvalidAttrNumber) refuse(relid, fmt::format("dropping or renaming column \"{}\"", col.name));
            if (!soft_column_type_ok(col.name, pg_call([&] { return get_atttype(relid, att); }))) {
                refuse(relid, fmt::format("changing the type of column \"{}\"", col.name));
            }
        }
        {
            /* A new owner (ALTER TABLE ... OWNER TO) may create partitions too. */
            OwnDdl own;
            bridge::AsRole ext(bridge::extension_owner());
            grant_trigger_functions(relid);
        }
        std::optional<std::string> flag = registered_flag(relid);
        if (flag) {
            AttrNumber att = pg_call([&] { return get_attnum(relid, flag->c_str()); });
            if (att == InvalidAttrNumber) refuse(relid, fmt::format("dropping or renaming flag column \"{}\"", *flag));
            if (pg_call([&] { return get_atttype(relid, att); }) != BOOLOID) {
                refuse(relid, fmt::format("changing the type of flag column \"{}\"", *flag));
            }
        }
        for (Oid rel : table_and_partitions(relid)) {
            if (flag) {
                char state = trigger_state(rel, flag_trigger);
                if (state == '\0') refuse(relid, fmt::format("dropping or renaming trigger \"{}\"", flag_trigger));
                if (state == TRIGGER_DISABLED) refuse(relid, fmt::format("disabling trigger \"{}\"", flag_trigger));
            }
            for (const char* name : {guard_trigger, cascade_trigger, truncate_trigger}) {
                if (name == truncate_trigger && !truncate_trigger_expected) continue;
                char state = trigger_state(rel, name);
                if (state == '\0' && name == truncate_trigger) {
                    /* A partition created or attached since enabling. */
                    OwnDdl own;
                    bridge::AsRole ext(bridge::extension_owner());
                    create_truncate_trigger(rel);
                } else if (state == '\0') {
                    refuse(relid, fmt::format("dropping or renaming trigger \"{}\"", name));
                } else if (state == TRIGGER_DISABLED) {
                    refuse(relid, fmt::format("disabling trigger \"{}\"", name));
                }
            }
        }
    }
}

}  // namespace

void install_triggers(Oid relid, bool hide) {
    std::string table = bridge::qualified_relation_name(relid);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    grant_trigger_functions(relid);
    /* Where Citus is installed, the guard trigger says whether deleted rows
     * are hidden, for the nodes holding the table's shards (citus.hpp). */
    bool citus = citus::present();
    if (citus && trigger_state(relid, guard_trigger) != '\0' && !citus::guard_arguments_match(relid, hide)) {
        bridge::execute_sql(fmt::format("DROP TRIGGER {} ON {}", guard_trigger, table), false);
    }
    if (trigger_state(relid, guard_trigger) == '\0') {
        bridge::execute_sql(fmt::format("CREATE TRIGGER {} BEFORE DELETE ON {} FOR EACH ROW "
                                        "EXECUTE FUNCTION lifecycle.soft_delete_guard({})",
                                        guard_trigger, table, citus ? citus::guard_arguments(hide) : ""),
                            false);
    }
    bool v02 = truncate_function_exists();
    if (trigger_state(relid, cascade_trigger) == '\0') {
        bridge::execute_sql(fmt::format("CREATE TRIGGER {} AFTER UPDATE ON {} FOR EACH ROW WHEN ({}) "
                                        "EXECUTE FUNCTION lifecycle.soft_delete_cascade()",
                                        cascade_trigger, table, v02 ? cascade_when_02 : cascade_when_01),
                            false);
    }
    if (!v02) return;
    for (Oid rel : table_and_partitions(relid)) {
        if (trigger_state(rel, truncate_trigger) == '\0') create_truncate_trigger(rel);
    }
}

void set_flag_trigger(Oid relid, const std::optional<std::string>& flag) {
    std::string table = bridge::qualified_relation_name(relid);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    if (trigger_state(relid, flag_trigger) != '\0') {
        bridge::execute_sql(fmt::format("DROP TRIGGER {} ON {}", flag_trigger, table), false);
    }
    if (!flag) return;
    bridge::execute_sql(
        fmt::format("CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW "
                    "EXECUTE FUNCTION lifecycle.soft_delete_flag({})",
                    flag_trigger, table, pg_call([&] { return std::string(quote_literal_cstr(flag->c_str())); })),
        false);
}

void reattach_after_restore(Oid relid) {
    if (own_ddl_depth > 0 || lookup(relid) != nullptr) return; /* ours, or registered already */
    if (citus::copy_of_citus_table(relid)) return;             /* a shard: recognised by its trigger */
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "enable soft delete on it");
    for (const Column& col : protected_columns) {
        AttrNumber att = pg_call([&] { return get_attnum(relid, col.name); });
        if (att == InvalidAttrNumber ||
            !soft_column_type_ok(col.name, pg_call([&] { return get_atttype(relid, att); }))) {
            throw Error(sqlstate::object_not_in_prerequisite_state,
                        fmt::format("table {} gets a soft-delete trigger of pg_lifecycle but has no column \"{}\" of "
                                    "the type soft delete needs",
                                    table, col.name),
                        {}, fmt::format("Call lifecycle.soft_delete_enable('{}') instead.", table));
        }
    }
    {
        static bridge::Statement insert(
            "INSERT INTO lifecycle.soft_delete_tables (tbl) VALUES ($1) ON CONFLICT (tbl) DO NOTHING", {REGCLASSOID});
        bridge::SpiConnection spi;
        Datum key = ObjectIdGetDatum(relid);
        bridge::AsRole ext(bridge::extension_owner());
        insert.execute(&key, nullptr, false);
    }
    invalidate(relid);
    pg_call([&table] {
        ereport(WARNING,
                (errcode(ERRCODE_WARNING),
                 errmsg("pg_lifecycle protects table %s again (soft delete, default settings)", table.c_str()),
                 errdetail("The table has pg_lifecycle's soft-delete triggers but its registration was not in the "
                           "restored data: it is registered with hide = true and no retention."),
                 errhint("Call lifecycle.soft_delete_enable() on it to set hide or a retention.")));
    });
}

void remove_triggers(Oid relid) {
    std::string table = bridge::qualified_relation_name(relid);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    for (const char* name : {guard_trigger, cascade_trigger}) {
        bridge::execute_sql(fmt::format("DROP TRIGGER IF EXISTS {} ON {}", name, table), false);
    }
    if (trigger_state(relid, flag_trigger) != '\0') {
        bridge::execute_sql(fmt::format("DROP TRIGGER {} ON {}", flag_trigger, table), false);
    }
    for (Oid rel : table_and_partitions(relid)) {
        bridge::execute_sql(
            fmt::format("DROP TRIGGER IF EXISTS {} ON {}", truncate_trigger, bridge::qualified_relation_name(rel)),
            false);
    }
}

}  // namespace pg_lifecycle::softdelete

using namespace pg_lifecycle;

/* lifecycle.soft_delete_truncate() RETURNS trigger: BEFORE TRUNCATE. */
LIFECYCLE_FUNCTION(lifecycle_soft_delete_truncate) {
    if (!CALLED_AS_TRIGGER(fcinfo)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated, "soft_delete_truncate must be called as a trigger");
    }
    auto* td = reinterpret_cast<TriggerData*>(fcinfo->context);
    if (!TRIGGER_FIRED_BY_TRUNCATE(td->tg_event) || !TRIGGER_FIRED_BEFORE(td->tg_event)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated,
                    "soft_delete_truncate must be a BEFORE TRUNCATE trigger");
    }
    Oid relid = RelationGetRelid(td->tg_relation);
    if (softdelete::lookup(relid) == nullptr) return PointerGetDatum(nullptr); /* not protected (any more) */
    if (softdelete::hard_delete_honoured(relid)) return PointerGetDatum(nullptr);
    std::string table = bridge::qualified_relation_name(relid);
    throw Error(sqlstate::object_not_in_prerequisite_state, fmt::format("cannot truncate soft-delete table {}", table),
                "TRUNCATE would remove its rows, deleted or not, for good.",
                "DELETE soft-deletes rows; to remove rows for good use lifecycle.purge(), or TRUNCATE as the table's "
                "owner with SET lifecycle.hard_delete = on.");
}

/* lifecycle.soft_delete_ddl() RETURNS event_trigger */
LIFECYCLE_FUNCTION(lifecycle_soft_delete_ddl) {
    if (!CALLED_AS_EVENT_TRIGGER(fcinfo)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated, "soft_delete_ddl must be called as an event trigger");
    }
    if (creating_extension || softdelete::own_ddl_depth > 0 || !softdelete::any_enabled()) PG_RETURN_VOID();
    bridge::pg_call([] { CommandCounterIncrement(); });
    softdelete::check_all();
    PG_RETURN_VOID();
}
