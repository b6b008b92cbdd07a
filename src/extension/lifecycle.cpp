/*
 * lifecycle.cpp — the extension's own life cycle (SPEC.md §0): what keeps a
 * dump/restore, DROP EXTENSION and CREATE EXTENSION again lossless and clean.
 *
 *  lifecycle.extension_reattach()  ddl_command_end of CREATE TRIGGER: one of
 *      our triggers created by somebody else than our own code — pg_restore of
 *      a schema-only or --schema dump, which has the triggers on the user's
 *      tables but not our configuration — attaches the table again (soft
 *      delete registered with default settings, counts re-attached from the
 *      trigger's arguments and rebuilt), or fails loudly: never a table whose
 *      triggers point at nothing.
 *  lifecycle.extension_drop()      ddl_command_start of DROP EXTENSION
 *      pg_lifecycle: drops the count tables (lifecycle.count_N_*), which are
 *      not members of the extension (they are created per table, and dumped
 *      with their data); if the DROP then fails, this is rolled back with it.
 *  The ProcessUtility hook (preloaded only): after DROP EXTENSION pg_lifecycle,
 *      drops the schema lifecycle when nothing else is left in it (CREATE
 *      EXTENSION created it, but a schema cannot be a member of the extension
 *      it contains); and a dump's CREATE SCHEMA lifecycle, restored into a
 *      database where CREATE EXTENSION pg_lifecycle ran first, is skipped with
 *      a NOTICE instead of failing.
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"

namespace pg_lifecycle::extension {

using bridge::pg_call;

namespace {

/* tgargs (bytea, NUL-separated) as strings. */
std::vector<std::string> trigger_args(uint64 row, int col, int nargs) {
    std::vector<std::string> out;
    auto d = bridge::result_datum(row, col);
    if (!d || nargs <= 0) return out;
    std::string bytes = pg_call([&d] {
        bytea* b = DatumGetByteaPP(*d);
        return std::string(VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
    });
    size_t start = 0;
    for (int i = 0; i < nargs && start <= bytes.size(); ++i) {
        size_t end = bytes.find('\0', start);
        if (end == std::string::npos) end = bytes.size();
        out.push_back(bytes.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

bool drops_this_extension(Node* parsetree) {
    if (parsetree == nullptr || !IsA(parsetree, DropStmt)) return false;
    auto* stmt = castNode(DropStmt, parsetree);
    if (stmt->removeType != OBJECT_EXTENSION) return false;
    ListCell* lc;
    foreach (lc, stmt->objects) {
        if (std::strcmp(strVal(lfirst(lc)), "pg_lifecycle") == 0) return true;
    }
    return false;
}

ProcessUtility_hook_type prev_utility_hook = nullptr;

/* The dump's CREATE SCHEMA lifecycle, where our extension made it already. */
bool is_our_existing_schema(Node* stmt) {
    if (stmt == nullptr || !IsA(stmt, CreateSchemaStmt)) return false;
    auto* create = castNode(CreateSchemaStmt, stmt);
    if (create->schemaname == nullptr || create->schemaElts != NIL) return false;
    Oid nsp = bridge::extension_schema();
    if (!OidIsValid(nsp)) return false;
    std::string ours = pg_call([nsp] {
        char* n = get_namespace_name(nsp);
        return std::string(n ? n : "");
    });
    return ours == create->schemaname;
}

void drop_schema_if_empty(Oid nsp) {
    std::string name = pg_call([nsp] {
        char* n = get_namespace_name(nsp);
        return std::string(n ? n : "");
    });
    if (name.empty()) return;
    bridge::SpiConnection spi;
    bool dropped = bridge::in_subtransaction(
        [&] { bridge::execute_sql("DROP SCHEMA " + bridge::quote_ident(name), false); },
        [](const bridge::PgError& e) { return e.sqlerrcode() == ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST; });
    if (!dropped) {
        pg_call([&name] {
            ereport(NOTICE, (errmsg("schema %s was kept: it holds objects that are not pg_lifecycle's", name.c_str())));
        });
    }
}

extern "C" void lifecycle_extension_utility(PlannedStmt* pstmt, const char* query_string, bool read_only_tree,
                                            ProcessUtilityContext context, ParamListInfo params,
                                            QueryEnvironment* query_env, DestReceiver* dest, QueryCompletion* qc) {
    Node* stmt = pstmt->utilityStmt;
    if (bridge::entry_guard([stmt] { return is_our_existing_schema(stmt); })) {
        ereport(NOTICE, (errmsg("schema \"lifecycle\" already exists (created by CREATE EXTENSION pg_lifecycle), "
                                "skipping")));
        return;
    }
    Oid dropping =
        bridge::entry_guard([stmt] { return drops_this_extension(stmt) ? bridge::extension_schema() : InvalidOid; });
    if (prev_utility_hook) {
        prev_utility_hook(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
    } else {
        standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
    }
    if (OidIsValid(dropping)) bridge::entry_guard([dropping] { drop_schema_if_empty(dropping); });
}

}  // namespace

void install_utility_hook() {
    prev_utility_hook = ProcessUtility_hook;
    ProcessUtility_hook = lifecycle_extension_utility;
}

}  // namespace pg_lifecycle::extension

using namespace pg_lifecycle;
using bridge::pg_call;

/* lifecycle.extension_reattach() RETURNS event_trigger */
LIFECYCLE_FUNCTION(lifecycle_extension_reattach) {
    if (!CALLED_AS_EVENT_TRIGGER(fcinfo)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated,
                    "extension_reattach must be called as an event trigger");
    }
    if (creating_extension) PG_RETURN_VOID();
    Oid nsp = bridge::extension_schema();
    if (!OidIsValid(nsp)) PG_RETURN_VOID();
    struct Created {
        Oid rel;
        std::string name;
        std::string function;
        std::vector<std::string> args;
    };
    std::vector<Created> created;
    {
        /* The catalogs as the command left them. */
        pg_call([] { CommandCounterIncrement(); });
        bridge::SpiConnection spi;
        Oid types[1] = {OIDOID};
        Datum values[1] = {ObjectIdGetDatum(nsp)};
        bridge::execute_fresh(
            "SELECT t.tgrelid, t.tgname::pg_catalog.text, p.proname::pg_catalog.text, t.tgnargs, t.tgargs "
            "FROM pg_catalog.pg_event_trigger_ddl_commands() c "
            "JOIN pg_catalog.pg_trigger t ON t.oid OPERATOR(pg_catalog.=) c.objid "
            "JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid "
            "WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass "
            "AND p.pronamespace OPERATOR(pg_catalog.=) $1 AND t.tgparentid OPERATOR(pg_catalog.=) 0",
            1, types, values, true);
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            int nargs = static_cast<int>(bridge::required_int64(i, 4));
            created.push_back(Created{DatumGetObjectId(bridge::required_datum(i, 1)), bridge::required_text(i, 2),
                                      bridge::required_text(i, 3), extension::trigger_args(i, 5, nargs)});
        }
    }
    for (const auto& c : created) {
        if (c.function == "soft_delete_guard" || c.function == "soft_delete_cascade" ||
            c.function == "soft_delete_truncate") {
            softdelete::reattach_after_restore(c.rel);
        } else if (c.function == "count_capture" || c.function == "count_truncate") {
            counts::reattach_after_restore(c.rel, c.name, c.args);
        }
    }
    PG_RETURN_VOID();
}

/* lifecycle.extension_drop() RETURNS event_trigger */
LIFECYCLE_FUNCTION(lifecycle_extension_drop) {
    if (!CALLED_AS_EVENT_TRIGGER(fcinfo)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated, "extension_drop must be called as an event trigger");
    }
    auto* data = reinterpret_cast<EventTriggerData*>(fcinfo->context);
    if (!extension::drops_this_extension(data->parsetree)) PG_RETURN_VOID();
    Oid nsp = bridge::extension_schema();
    if (!OidIsValid(nsp)) PG_RETURN_VOID();
    bridge::SpiConnection spi;
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(nsp)};
    /* The count tables: in our schema, named count_<id>_<kind>, not members. */
    bridge::execute_sql(
        "SELECT pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_class c "
        "WHERE c.relnamespace OPERATOR(pg_catalog.=) $1 AND c.relkind OPERATOR(pg_catalog.=) 'r' "
        "AND c.relname OPERATOR(pg_catalog.~) '^count_[0-9]+_(delta|bucket|total|s[0-9]+)$' "
        "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid OPERATOR(pg_catalog.=) "
        "'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) c.oid "
        "AND d.deptype OPERATOR(pg_catalog.=) 'e')",
        1, types, values, nullptr, true);
    std::vector<std::string> tables;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) tables.push_back(bridge::required_text(i, 1));
    if (tables.empty()) PG_RETURN_VOID();
    std::string list;
    for (const auto& t : tables) list += (list.empty() ? "" : ", ") + std::string("lifecycle.") + t;
    counts::OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    bridge::execute_sql("DROP TABLE " + list, false);
    PG_RETURN_VOID();
}
