/*
 * ddl.cpp — keeping counts exact across DDL (the event triggers of
 * lifecycle.count_ddl):
 *
 *  ddl_command_end (CREATE TABLE, ALTER TABLE, ALTER TRIGGER) on a counted
 *    table or one of its partitions:
 *    - a partition attached (ATTACH, CREATE TABLE ... PARTITION OF) gets our
 *      triggers and its rows are added; one detached loses them and its rows
 *      are subtracted — in the same transaction as the DDL, from a snapshot
 *      taken after its locks;
 *    - a dimension or time column renamed, retyped or dropped, or one of our
 *      triggers disabled, is refused (55000): the counts could not stay exact;
 *    - a deleted_at column appearing or going away is followed (soft delete);
 *    - a new owner of the table becomes the owner of its count tables.
 *  ddl_command_start (DROP TABLE) of a counted partition: its rows are
 *    subtracted before it goes (it is locked first, as DROP would).
 *  sql_drop: a counted table dropped takes its count tables with it; a
 *    partition dropped some other way (DROP SCHEMA ... CASCADE) makes the
 *    counts be rebuilt from the table; dropping our triggers or count tables
 *    alone is refused.
 */
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"

#include <algorithm>

namespace pg_lifecycle::counts {

using bridge::pg_call;

namespace {

bool contains(const std::vector<Oid>& v, Oid x) { return std::find(v.begin(), v.end(), x) != v.end(); }

char relkind_of(Oid relid) {
    return pg_call([relid] { return get_rel_relkind(relid); });
}

std::vector<Oid> oid_column() {
    std::vector<Oid> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(DatumGetObjectId(bridge::required_datum(i, 1)));
    return out;
}

void drop_counts_of(const Config& cfg) {
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    drop_count_tables(cfg);
    static bridge::Statement remove("DELETE FROM lifecycle.count_tables WHERE id = $1", {INT4OID});
    Datum key = Int32GetDatum(cfg.id);
    remove.execute(&key, nullptr, false);
    registry_changed();
}

/* Every dimension and the time column still exist, with the type and
 * collation their copies in count_N_delta have. */
void check_columns(const Config& cfg) {
    static bridge::Statement missing(
        "SELECT d.name FROM pg_catalog.unnest($2::text[]) d(name) WHERE NOT EXISTS ("
        "SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_attribute x "
        "ON x.attrelid = $3 AND x.attname = a.attname AND NOT x.attisdropped "
        "WHERE a.attrelid = $1 AND a.attname = d.name AND NOT a.attisdropped "
        "AND a.atttypid = x.atttypid AND a.attcollation = x.attcollation) "
        "UNION ALL SELECT $4 WHERE $4 IS NOT NULL AND NOT EXISTS ("
        "SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attname = $4 AND NOT a.attisdropped "
        "AND a.atttypid = 'pg_catalog.timestamptz'::pg_catalog.regtype) LIMIT 1",
        {OIDOID, TEXTARRAYOID, OIDOID, TEXTOID});
    Oid delta = lifecycle_relation(cfg.table_name("delta"));
    Datum names = pg_call([&] {
        Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * (cfg.dims.size() + 1)));
        for (size_t i = 0; i < cfg.dims.size(); ++i) elems[i] = CStringGetTextDatum(cfg.dims[i].c_str());
        return PointerGetDatum(
            construct_array(elems, static_cast<int>(cfg.dims.size()), TEXTOID, -1, false, TYPALIGN_INT));
    });
    Datum values[4] = {ObjectIdGetDatum(cfg.relid), names, ObjectIdGetDatum(delta),
                       cfg.has_time() ? bridge::text_datum(cfg.time_column) : (Datum)0};
    char nulls[5] = "   n";
    if (cfg.has_time()) nulls[3] = ' ';
    missing.execute(values, nulls, true, 1);
    if (bridge::processed_rows() > 0) {
        std::string column = bridge::required_text(0, 1);
        std::string table = relation_display_name(cfg.relid);
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("column \"{}\" of table {} is counted by pg_lifecycle as its {}", column, table,
                                column == cfg.time_column ? "time column" : "dimension"),
                    "Renaming, retyping or dropping it would make lifecycle.count wrong.",
                    fmt::format("Call lifecycle.count_disable('{}') first, and count_enable again afterwards.", table));
    }
}

/* None of our triggers on the table or its partitions is disabled. */
void check_triggers_enabled(const Config& cfg, const std::vector<Oid>& rels) {
    static bridge::Statement disabled(
        "SELECT t.tgname::text, t.tgrelid::regclass::text FROM pg_catalog.pg_trigger t "
        "WHERE t.tgrelid = ANY ($1) AND t.tgname::text LIKE $2 AND t.tgenabled IN ('D', 'R') LIMIT 1",
        {OIDARRAYOID, TEXTOID});
    Datum arr = pg_call([&] {
        Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * (rels.size() + 1)));
        for (size_t i = 0; i < rels.size(); ++i) elems[i] = ObjectIdGetDatum(rels[i]);
        return PointerGetDatum(
            construct_array(elems, static_cast<int>(rels.size()), OIDOID, sizeof(Oid), true, TYPALIGN_INT));
    });
    Datum values[2] = {arr, bridge::text_datum(fmt::format("lifecycle\\_count\\_{}\\_%", cfg.id))};
    disabled.execute(values, nullptr, true, 1);
    if (bridge::processed_rows() > 0) {
        std::string table = relation_display_name(cfg.relid);
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("trigger \"{}\" on table {} keeps the counts of {} exact and must stay enabled",
                                bridge::required_text(0, 1), bridge::required_text(0, 2), table),
                    {},
                    fmt::format("To load data without it, call lifecycle.count_disable('{}') and count_enable "
                                "again afterwards.",
                                table));
    }
}

void sync_owner(const Config& cfg) {
    Oid owner = bridge::relation_owner(cfg.relid);
    if (counts_owner(cfg) == owner) return;
    std::string role = bridge::quote_ident(pg_call([owner] { return std::string(GetUserNameFromId(owner, false)); }));
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    for (const auto& t : cfg.count_tables()) {
        bridge::execute_sql(fmt::format("ALTER TABLE {} OWNER TO {}", t, role), false);
    }
}

bool scalar_true(const std::string& sql, bool fresh) {
    if (fresh) {
        pg_call([] { CommandCounterIncrement(); });
        bridge::execute_fresh(sql, 0, nullptr, nullptr, true, 1);
    } else {
        bridge::execute_sql(sql, true, 1);
    }
    return bridge::processed_rows() > 0 && DatumGetBool(bridge::result_datum(0, 1).value_or(BoolGetDatum(false)));
}

void set_live_column(const Config& cfg, bool has) {
    static bridge::Statement update("UPDATE lifecycle.count_tables SET live_column = $2 WHERE id = $1",
                                    {INT4OID, BOOLOID});
    Datum values[2] = {Int32GetDatum(cfg.id), BoolGetDatum(has)};
    bridge::AsRole ext(bridge::extension_owner());
    update.execute(values, nullptr, false);
    registry_changed();
}

/* A deleted_at column appeared or went away: rows counted live may not be. */
void follow_live_column(const Config& cfg) {
    bool has = pg_call([&] { return get_attnum(cfg.relid, softdelete::deleted_at_column); }) > 0;
    if (has == cfg.live_column) return;
    set_live_column(cfg, has);
    bool stale;
    {
        bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
        if (has) {
            /* Added with a non-NULL default: those rows are not live. */
            stale = scalar_true(fmt::format("SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NOT NULL)",
                                            relation_display_name(cfg.relid), softdelete::deleted_at_column),
                                true);
        } else {
            stale = scalar_true(fmt::format("SELECT EXISTS (SELECT 1 FROM {} WHERE NOT lc_live) OR "
                                            "EXISTS (SELECT 1 FROM {} WHERE NOT lc_live)",
                                            cfg.delta(), cfg.lattice.empty() ? cfg.delta() : cfg.summary(0)),
                                false);
        }
    }
    if (stale) {
        lock_against_writers(cfg);
        rebuild(cfg);
    }
}

/* Partitions attached since we last looked gain our triggers and add their
 * rows; detached ones lose both; ones gone without us seeing their rows make
 * us rebuild. */
void follow_partitions(const Config& cfg) {
    std::vector<Oid> current = attached_partitions(cfg.relid);
    std::vector<Oid> known = registered_parts(cfg);
    bool lost = false;
    for (Oid part : known) {
        if (contains(current, part)) continue;
        char kind = relkind_of(part);
        if (kind == '\0') {
            lost = true;
        } else {
            if (kind == RELKIND_RELATION) scan_into_delta(cfg, part, -1);
            drop_triggers(cfg, part);
        }
        unregister_part(part);
    }
    for (Oid part : current) {
        if (contains(known, part)) continue;
        create_triggers(cfg, part);
        if (relkind_of(part) == RELKIND_RELATION) scan_into_delta(cfg, part, +1);
        register_part(cfg, part);
    }
    if (lost) {
        lock_against_writers(cfg);
        rebuild(cfg);
    }
}

bool affected(const Config& cfg, const std::vector<Oid>& objects, const std::vector<Oid>& parts) {
    for (Oid o : objects) {
        if (o == cfg.relid || contains(parts, o)) return true;
        bool partition = pg_call([o] { return get_rel_relispartition(o); });
        if (!partition) continue;
        List* ancestors = pg_call([o] { return get_partition_ancestors(o); });
        if (pg_call([&] { return list_member_oid(ancestors, cfg.relid); })) return true;
    }
    return false;
}

void refuse_inheritance() {
    static bridge::Statement children(
        "SELECT c.tbl::text FROM lifecycle.count_tables c JOIN pg_catalog.pg_class r ON r.oid = c.tbl "
        "WHERE r.relkind = 'r' AND EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.tbl) LIMIT 1",
        {});
    children.execute(nullptr, nullptr, true, 1);
    if (bridge::processed_rows() > 0) {
        std::string table = bridge::required_text(0, 1);
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("the rows of table {} are counted by pg_lifecycle", table),
                    "A table with inheritance children is counted with their rows by count(*), which its statement "
                    "triggers do not see.",
                    fmt::format("Call lifecycle.count_disable('{}') first, or use declarative partitioning.", table));
    }
}

}  // namespace

bool has_inheritance_children(Oid relid) {
    static bridge::Statement children("SELECT 1 FROM pg_catalog.pg_inherits WHERE inhparent = $1 LIMIT 1", {OIDOID});
    Datum key = ObjectIdGetDatum(relid);
    children.execute(&key, nullptr, true, 1);
    return bridge::processed_rows() > 0;
}

void lock_against_writers(const Config& cfg) {
    std::vector<Oid> parts = attached_partitions(cfg.relid);
    pg_call([&] {
        LockRelationOid(cfg.relid, ShareLock);
        for (Oid p : parts) LockRelationOid(p, ShareLock);
    });
}

void reconcile_after_ddl(bool dropping) {
    std::vector<Config> configs = load_all_configs();
    if (configs.empty()) return;

    std::vector<Oid> objects;
    if (dropping) {
        /* Our own tables and triggers are not to be dropped on their own. */
        bridge::execute_sql(
            "SELECT object_type, address_names[1], address_names[2], address_names[3] "
            "FROM pg_catalog.pg_event_trigger_dropped_objects() "
            "WHERE (object_type = 'trigger' AND address_names[3] LIKE 'lifecycle\\_count\\_%') "
            "OR (object_type = 'table' AND address_names[1] = 'lifecycle' AND address_names[2] LIKE 'count\\_%')",
            true);
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            std::string type = bridge::required_text(i, 1);
            std::string schema = bridge::result_text(i, 2).value_or("");
            std::string name = bridge::result_text(i, 3).value_or("");
            std::string trigger = bridge::result_text(i, 4).value_or("");
            int id = 0;
            if (type == "trigger") {
                Oid table = pg_call([&] {
                    Oid nsp = get_namespace_oid(schema.c_str(), true);
                    return OidIsValid(nsp) ? get_relname_relid(name.c_str(), nsp) : InvalidOid;
                });
                if (!OidIsValid(table)) continue; /* dropped with its table */
                std::sscanf(trigger.c_str(), "lifecycle_count_%d_", &id);
            } else {
                std::sscanf(name.c_str(), "count_%d_", &id);
            }
            for (const auto& cfg : configs) {
                if (cfg.id != id || relkind_of(cfg.relid) == '\0') continue;
                std::string table = relation_display_name(cfg.relid);
                throw Error(
                    sqlstate::object_not_in_prerequisite_state,
                    fmt::format("{} {} keeps the counts of table {} exact", type == "trigger" ? "trigger" : "table",
                                type == "trigger" ? trigger : "lifecycle." + name, table),
                    {}, fmt::format("Call lifecycle.count_disable('{}') to stop counting.", table));
            }
        }
    } else {
        bridge::execute_sql(
            "SELECT objid FROM pg_catalog.pg_event_trigger_ddl_commands() "
            "WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass",
            true);
        objects = oid_column();
    }

    for (const auto& cfg : configs) {
        char kind = relkind_of(cfg.relid);
        if (kind == '\0') {
            if (dropping) drop_counts_of(cfg);
            continue;
        }
        std::vector<Oid> parts = registered_parts(cfg);
        if (dropping) {
            /* Dropped with something else (DROP SCHEMA ... CASCADE, say). */
            check_columns(cfg);
            bool lost = false;
            for (Oid p : parts) {
                if (relkind_of(p) != '\0') continue;
                unregister_part(p);
                lost = true;
            }
            if (lost) {
                lock_against_writers(cfg);
                rebuild(cfg);
            }
            continue;
        }
        if (!affected(cfg, objects, parts)) continue;
        check_columns(cfg);
        sync_owner(cfg);
        follow_live_column(cfg);
        if (kind == RELKIND_PARTITIONED_TABLE) follow_partitions(cfg);
        std::vector<Oid> rels = attached_partitions(cfg.relid);
        rels.push_back(cfg.relid);
        check_triggers_enabled(cfg, rels);
    }
    if (!dropping) refuse_inheritance();
}

void refuse_concurrent_detach(Node* parsetree) {
    if (parsetree == nullptr || !IsA(parsetree, AlterTableStmt)) return;
    auto* stmt = castNode(AlterTableStmt, parsetree);
    ListCell* cell;
    foreach (cell, stmt->cmds) {
        auto* cmd = lfirst_node(AlterTableCmd, cell);
        if (cmd->subtype != AT_DetachPartition || cmd->def == nullptr) continue;
        auto* partition = castNode(PartitionCmd, cmd->def);
        if (!partition->concurrent) continue;
        Oid relid = pg_call([stmt] { return RangeVarGetRelid(stmt->relation, NoLock, true); });
        if (!OidIsValid(relid)) return;
        std::optional<Config> cfg = config_for_relation(relid);
        if (!cfg) return;
        std::string table = relation_display_name(cfg->relid);
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("cannot detach a partition of counted table {} concurrently", table),
                    "DETACH PARTITION ... CONCURRENTLY commits half-way; if its second transaction were cancelled, "
                    "the partition would stay counted until DETACH PARTITION ... FINALIZE.",
                    fmt::format("Detach it without CONCURRENTLY (exact, in one transaction), or call "
                                "lifecycle.count_disable('{}') first.",
                                table));
    }
}

void before_drop(Node* parsetree) {
    if (parsetree == nullptr || !IsA(parsetree, DropStmt)) return;
    auto* stmt = castNode(DropStmt, parsetree);
    if (stmt->removeType != OBJECT_TABLE) return;
    static bridge::Statement part_of("SELECT id FROM lifecycle.count_parts WHERE part = $1", {OIDOID});
    ListCell* cell;
    foreach (cell, stmt->objects) {
        List* names = castNode(List, lfirst(cell));
        Oid relid = pg_call([names] {
            RangeVar* rv = makeRangeVarFromNameList(names);
            return RangeVarGetRelid(rv, NoLock, true);
        });
        if (!OidIsValid(relid)) continue;
        /* Permission before lock: a role that may not drop the table gets
         * DROP's own error, without waiting for, or blocking, anybody. */
        bool may_drop = pg_call([relid] {
            return object_ownercheck(RelationRelationId, relid, GetUserId()) ||
                   object_ownercheck(NamespaceRelationId, get_rel_namespace(relid), GetUserId());
        });
        if (!may_drop) continue;
        Datum key = ObjectIdGetDatum(relid);
        part_of.execute(&key, nullptr, true, 1);
        if (bridge::processed_rows() == 0) continue;
        int32 id = static_cast<int32>(bridge::required_int64(0, 1));
        auto cfg = load_config_by_id(id);
        if (!cfg) continue;
        /* The locks DROP takes, in its order: the parent, then the partition. */
        pg_call([relid] {
            Oid parent = get_partition_parent(relid, true);
            if (OidIsValid(parent)) LockRelationOid(parent, AccessExclusiveLock);
            LockRelationOid(relid, AccessExclusiveLock);
        });
        scan_into_delta(*cfg, relid, -1);
        std::vector<Oid> gone = attached_partitions(relid);
        gone.push_back(relid);
        std::vector<Oid> known = registered_parts(*cfg);
        for (Oid p : gone) {
            if (contains(known, p)) unregister_part(p);
        }
    }
}

}  // namespace pg_lifecycle::counts
