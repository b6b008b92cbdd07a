/*
 * capture_triggers.cpp — our triggers on a counted table and its partitions.
 */
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"
#include "softdelete/citus.hpp"

#include <algorithm>
#include <unordered_map>

namespace pg_lifecycle::counts {

/* ------------------------------------------------------------------------
 * Triggers
 * ------------------------------------------------------------------------ */

namespace {

struct TriggerSpec {
    const char* suffix;
    const char* timing_event;
    const char* referencing;
    const char* function;
};

constexpr TriggerSpec trigger_specs[] = {
    {"ins", "AFTER INSERT", "REFERENCING NEW TABLE AS lifecycle_new", "count_capture"},
    {"upd", "AFTER UPDATE", "REFERENCING OLD TABLE AS lifecycle_old NEW TABLE AS lifecycle_new", "count_capture"},
    {"del", "AFTER DELETE", "REFERENCING OLD TABLE AS lifecycle_old", "count_capture"},
    {"trb", "BEFORE TRUNCATE", "", "count_truncate"},
    {"tra", "AFTER TRUNCATE", "", "count_truncate"},
};

}  // namespace

void create_triggers(const Config& cfg, Oid rel) {
    std::string table = relation_display_name(rel);
    /* Arguments of count_capture: id, time column ('' for none), bucket, dimensions. */
    std::string args = quote_literal_str(std::to_string(cfg.id)) + ", " + quote_literal_str(cfg.time_column) + ", " +
                       quote_literal_str(cfg.has_time() ? cfg.bucket_text : std::string());
    for (const auto& d : cfg.dims) args += ", " + quote_literal_str(d);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    /* On a Citus table, Citus copies them to every shard. */
    softdelete::citus::with_triggers_allowed([&] {
        for (const auto& t : trigger_specs) {
            std::string name = fmt::format("lifecycle_count_{}_{}", cfg.id, t.suffix);
            bool capture = std::string_view(t.function) == "count_capture";
            bridge::execute_sql(fmt::format("CREATE TRIGGER {} {} ON {} {} FOR EACH STATEMENT EXECUTE FUNCTION "
                                            "lifecycle.{}({})",
                                            name, t.timing_event, table, t.referencing, t.function,
                                            capture ? args : quote_literal_str(std::to_string(cfg.id))),
                                false);
            /* Counts must follow every change, logical replication's included. */
            bridge::execute_sql(fmt::format("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}", table, name), false);
        }
    });
}

void drop_triggers(const Config& cfg, Oid rel) {
    std::string table = relation_display_name(rel);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    softdelete::citus::with_triggers_allowed([&] {
        for (const auto& t : trigger_specs) {
            bridge::execute_sql(
                fmt::format("DROP TRIGGER IF EXISTS lifecycle_count_{}_{} ON {}", cfg.id, t.suffix, table), false);
        }
    });
}

/* ------------------------------------------------------------------------
 * Partitions
 * ------------------------------------------------------------------------ */

std::vector<Oid> attached_partitions(Oid root) {
    static bridge::Statement tree(
        "WITH RECURSIVE t(relid, depth) AS (SELECT $1::oid, 0 UNION ALL "
        "SELECT i.inhrelid, t.depth + 1 FROM pg_catalog.pg_inherits i JOIN t ON i.inhparent = t.relid "
        "WHERE NOT i.inhdetachpending) "
        "SELECT relid FROM t WHERE depth > 0 ORDER BY depth, relid",
        {OIDOID});
    Datum key = ObjectIdGetDatum(root);
    tree.execute(&key, nullptr, true);
    std::vector<Oid> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(DatumGetObjectId(bridge::required_datum(i, 1)));
    return out;
}

std::vector<Oid> registered_parts(const Config& cfg) {
    static bridge::Statement parts("SELECT part::oid FROM lifecycle.count_parts WHERE id = $1 ORDER BY part::oid",
                                   {INT4OID});
    Datum key = Int32GetDatum(cfg.id);
    parts.execute(&key, nullptr, true);
    std::vector<Oid> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(DatumGetObjectId(bridge::required_datum(i, 1)));
    return out;
}

void register_part(const Config& cfg, Oid part) {
    static bridge::Statement add("INSERT INTO lifecycle.count_parts (part, id) VALUES ($1, $2)",
                                 {REGCLASSOID, INT4OID});
    Datum values[2] = {ObjectIdGetDatum(part), Int32GetDatum(cfg.id)};
    bridge::AsRole ext(bridge::extension_owner());
    add.execute(values, nullptr, false);
    registry_changed();
}

void unregister_part(Oid part) {
    static bridge::Statement remove("DELETE FROM lifecycle.count_parts WHERE part = $1", {REGCLASSOID});
    Datum key = ObjectIdGetDatum(part);
    bridge::AsRole ext(bridge::extension_owner());
    remove.execute(&key, nullptr, false);
    registry_changed();
}

}  // namespace pg_lifecycle::counts

namespace pg_lifecycle::counts {}  // namespace pg_lifecycle::counts
