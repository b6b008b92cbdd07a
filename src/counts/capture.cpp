/*
 * capture.cpp — the triggers that keep exact counts:
 *
 *  lifecycle.count_capture()   AFTER INSERT/UPDATE/DELETE ... FOR EACH STATEMENT
 *                              with transition tables: appends one row per
 *                              (dims, bucket, live) group of the statement to
 *                              count_N_delta (+n for new rows, -n for old).
 *                              COPY, MERGE, ON CONFLICT, FK cascades and
 *                              cross-partition UPDATEs all come through here.
 *  lifecycle.count_truncate()  BEFORE/AFTER TRUNCATE: the counted table's own
 *                              TRUNCATE empties its count tables; a partition's
 *                              subtracts that partition's rows (unless an
 *                              ancestor is truncated by the same command).
 *  lifecycle.count_ddl()       the event triggers (see ddl.cpp).
 */
#include "bridge/function.hpp"
#include "counts/counts.hpp"

using namespace pg_lifecycle;
using namespace pg_lifecycle::counts;
using bridge::pg_call;

namespace {

TriggerData* trigger_data(FunctionCallInfo fcinfo, const char* name) {
    if (!CALLED_AS_TRIGGER(fcinfo)) {
        throw Error(sqlstate::wrong_object_state, fmt::format("lifecycle.{}() must be called as a trigger", name));
    }
    return reinterpret_cast<TriggerData*>(fcinfo->context);
}

/* The configuration of the counted table the trigger fires on (or of its
 * root, for a partition), from the registry — never from the trigger's
 * arguments, which whoever created the trigger chose. */
Config config_of(TriggerData* td) {
    Oid rel = RelationGetRelid(td->tg_relation);
    const Config* cfg = config_for_relation(rel);
    if (cfg == nullptr) {
        throw Error(sqlstate::wrong_object_state,
                    fmt::format("table {} is not counted by pg_lifecycle", relation_display_name(rel)),
                    fmt::format("Trigger \"{}\" calls a function of pg_lifecycle's exact counts.",
                                td->tg_trigger->tgname),
                    "Drop the trigger; lifecycle.count_enable creates the triggers counting needs.");
    }
    return *cfg;
}

bool has_deleted_at(Relation rel) {
    TupleDesc desc = RelationGetDescr(rel);
    for (int i = 0; i < desc->natts; ++i) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (!att->attisdropped && std::strcmp(NameStr(att->attname), "deleted_at") == 0) return true;
    }
    return false;
}

std::string capture_sql(const Config& cfg, TriggerData* td) {
    const Trigger* trig = td->tg_trigger;
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    std::string live = has_deleted_at(td->tg_relation) ? "(deleted_at IS NULL)" : "true";
    std::string bucket = cfg.has_time() ? bucket_expression(cfg, 1) : std::string();
    int ngroup = static_cast<int>(cfg.dims.size()) + (cfg.has_time() ? 1 : 0) + 1;
    std::string group;
    for (int i = 1; i <= ngroup; ++i) group += (i > 1 ? ", " : "") + std::to_string(i);
    std::string columns = fmt::format("{}{}{}lc_live", dims, sep, cfg.has_time() ? "lc_bucket, " : "");
    std::string keys = fmt::format("{}{}{}{}", dims, sep, cfg.has_time() ? bucket + ", " : "", live);

    if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
        return fmt::format(
            "INSERT INTO {0} ({1}, lc_delta) SELECT {1}, pg_catalog.sum(lc_s) FROM ("
            "SELECT {2}{3}{4} AS lc_live, 1 AS lc_s FROM {5} UNION ALL "
            "SELECT {2}{3}{4}, -1 FROM {6}) x GROUP BY {7} HAVING pg_catalog.sum(lc_s) <> 0",
            cfg.delta(), columns, fmt::format("{}{}", dims, sep),
            cfg.has_time() ? bucket + " AS lc_bucket, " : "", live, bridge::quote_ident(trig->tgnewtable),
            bridge::quote_ident(trig->tgoldtable), group);
    }
    bool insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
    return fmt::format("INSERT INTO {} ({}, lc_delta) SELECT {}, {}pg_catalog.count(*) FROM {} GROUP BY {}", cfg.delta(), columns,
                       keys, insert ? "" : "-", bridge::quote_ident(insert ? trig->tgnewtable : trig->tgoldtable),
                       group);
}

/* ------------------------------------------------------------------------
 * Fast path for small statements (the single-row INSERT of an application):
 * the transition tables are read directly and the few delta rows are written
 * with heap_insert, without SPI, planning or an executor.  Rows are grouped by
 * binary equality of their keys; rows that are equal for the type but not
 * binary-equal just make two delta rows, which sum the same.
 * ------------------------------------------------------------------------ */

constexpr int64 fast_path_max_rows = 32;
constexpr int fast_path_max_dims = 8;

struct DeltaKey {
    Datum dims[fast_path_max_dims];
    bool nulls[fast_path_max_dims];
    TimestampTz bucket;
    bool bucket_null;
    bool live;
    int64 delta;
};

struct SourceColumns {
    int ndims = 0;
    AttrNumber dims[fast_path_max_dims];
    int16 typlen[fast_path_max_dims];
    bool typbyval[fast_path_max_dims];
    Oid typid[fast_path_max_dims];
    AttrNumber time = InvalidAttrNumber;
    AttrNumber deleted_at = InvalidAttrNumber;
};

/* Column numbers of the dimensions, time column and deleted_at in `desc`;
 * false when one is missing (the SPI path then reports it). */
bool source_columns(const Config& cfg, TupleDesc desc, SourceColumns& out) {
    out.ndims = static_cast<int>(cfg.dims.size());
    for (int d = 0; d < out.ndims; ++d) out.dims[d] = InvalidAttrNumber;
    for (int i = 0; i < desc->natts; ++i) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (att->attisdropped) continue;
        const char* name = NameStr(att->attname);
        for (int d = 0; d < out.ndims; ++d) {
            if (cfg.dims[d] == name) {
                out.dims[d] = att->attnum;
                out.typlen[d] = att->attlen;
                out.typbyval[d] = att->attbyval;
                out.typid[d] = att->atttypid;
            }
        }
        if (cfg.has_time() && cfg.time_column == name) out.time = att->attnum;
        if (std::strcmp(name, "deleted_at") == 0) out.deleted_at = att->attnum;
    }
    for (int d = 0; d < out.ndims; ++d) {
        if (out.dims[d] == InvalidAttrNumber) return false;
    }
    return !cfg.has_time() || out.time != InvalidAttrNumber;
}

bool same_key(const DeltaKey& a, const DeltaKey& b, const SourceColumns& src) {
    if (a.live != b.live || a.bucket_null != b.bucket_null || (!a.bucket_null && a.bucket != b.bucket)) return false;
    for (int d = 0; d < src.ndims; ++d) {
        if (a.nulls[d] != b.nulls[d]) return false;
        if (!a.nulls[d] && !datum_image_eq(a.dims[d], b.dims[d], src.typbyval[d], src.typlen[d])) return false;
    }
    return true;
}

/* Adds sign * each row of `store` to keys[0..*nkeys).  Plain PostgreSQL calls
 * only: runs inside pg_call. */
void collect_keys(Tuplestorestate* store, TupleDesc desc, const SourceColumns& src, int64 stride, int sign,
                  DeltaKey* keys, int* nkeys) {
    TupleTableSlot* slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
    int ptr = tuplestore_alloc_read_pointer(store, 0);
    tuplestore_select_read_pointer(store, ptr);
    tuplestore_rescan(store);
    while (tuplestore_gettupleslot(store, true, false, slot)) {
        DeltaKey k;
        for (int d = 0; d < src.ndims; ++d) {
            Datum v = slot_getattr(slot, src.dims[d], &k.nulls[d]);
            k.dims[d] = k.nulls[d] ? (Datum)0 : datumCopy(v, src.typbyval[d], src.typlen[d]);
        }
        k.bucket = 0;
        k.bucket_null = true;
        if (src.time != InvalidAttrNumber) {
            Datum t = slot_getattr(slot, src.time, &k.bucket_null);
            if (!k.bucket_null) k.bucket = bucket_start(DatumGetTimestampTz(t), stride);
        }
        k.live = true;
        if (src.deleted_at != InvalidAttrNumber) {
            bool isnull;
            (void)slot_getattr(slot, src.deleted_at, &isnull);
            k.live = isnull;
        }
        k.delta = sign;
        int i = 0;
        while (i < *nkeys && !same_key(keys[i], k, src)) ++i;
        if (i < *nkeys) {
            keys[i].delta += sign;
        } else {
            keys[(*nkeys)++] = k;
        }
    }
    tuplestore_select_read_pointer(store, 0);
    ExecDropSingleTupleTableSlot(slot);
}

/* Appends the non-zero keys to count_N_delta (columns matched by name). */
void insert_keys(Oid delta_oid, const SourceColumns& src, const Config& cfg, const DeltaKey* keys, int nkeys) {
    Relation delta = table_open(delta_oid, RowExclusiveLock);
    TupleDesc dd = RelationGetDescr(delta);
    int natts = dd->natts;
    Datum* values = static_cast<Datum*>(palloc0(sizeof(Datum) * natts));
    bool* nulls = static_cast<bool*>(palloc(sizeof(bool) * natts));
    /* role of each delta column: 0..ndims-1 a dimension, -1 bucket, -2 live, -3 delta, -4 none */
    int* role = static_cast<int*>(palloc(sizeof(int) * natts));
    for (int i = 0; i < natts; ++i) {
        Form_pg_attribute att = TupleDescAttr(dd, i);
        const char* name = NameStr(att->attname);
        role[i] = -4;
        if (att->attisdropped) continue;
        if (std::strcmp(name, "lc_bucket") == 0) role[i] = -1;
        else if (std::strcmp(name, "lc_live") == 0) role[i] = -2;
        else if (std::strcmp(name, "lc_delta") == 0) role[i] = -3;
        else {
            for (int d = 0; d < src.ndims; ++d) {
                if (cfg.dims[d] == name) role[i] = d;
            }
        }
        /* Never form a tuple whose values do not match the delta table's
         * column types (check_columns refuses DDL that would cause it). */
        Oid expected = role[i] >= 0 ? src.typid[role[i]]
                       : role[i] == -1 ? TIMESTAMPTZOID
                       : role[i] == -2 ? BOOLOID
                       : role[i] == -3 ? INT8OID
                                       : att->atttypid;
        if (att->atttypid != expected) {
            ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                            errmsg("column \"%s\" of %s does not match its counted column", name,
                                   RelationGetRelationName(delta)),
                            errhint("Call lifecycle.count_disable and lifecycle.count_enable again.")));
        }
    }
    for (int k = 0; k < nkeys; ++k) {
        if (keys[k].delta == 0) continue;
        for (int i = 0; i < natts; ++i) {
            nulls[i] = true;
            values[i] = (Datum)0;
            switch (role[i]) {
                case -4: break;
                case -1:
                    nulls[i] = keys[k].bucket_null;
                    values[i] = TimestampTzGetDatum(keys[k].bucket);
                    break;
                case -2:
                    nulls[i] = false;
                    values[i] = BoolGetDatum(keys[k].live);
                    break;
                case -3:
                    nulls[i] = false;
                    values[i] = Int64GetDatum(keys[k].delta);
                    break;
                default:
                    nulls[i] = keys[k].nulls[role[i]];
                    values[i] = keys[k].dims[role[i]];
            }
        }
        HeapTuple tup = heap_form_tuple(dd, values, nulls);
        simple_heap_insert(delta, tup);
        heap_freetuple(tup);
    }
    table_close(delta, NoLock);
}

/* The fast path; false when the statement is too big for it. */
bool capture_small(const Config& cfg, TriggerData* td) {
    if (cfg.dims.size() > static_cast<size_t>(fast_path_max_dims)) return false;
    Tuplestorestate* news = TRIGGER_FIRED_BY_DELETE(td->tg_event) ? nullptr : td->tg_newtable;
    Tuplestorestate* olds = TRIGGER_FIRED_BY_INSERT(td->tg_event) ? nullptr : td->tg_oldtable;
    int64 rows = pg_call([&] {
        return (news ? tuplestore_tuple_count(news) : 0) + (olds ? tuplestore_tuple_count(olds) : 0);
    });
    if (rows > fast_path_max_rows) return false;
    if (rows == 0) return true;
    TupleDesc desc = RelationGetDescr(td->tg_relation);
    SourceColumns src;
    if (!source_columns(cfg, desc, src)) return false;
    Oid delta = lifecycle_relation(cfg.table_name("delta"));
    if (delta == InvalidOid) return false;
    int64 stride = cfg.has_time() ? bucket_usecs_of(cfg.bucket_text) : 1;
    DeltaKey keys[2 * fast_path_max_rows];
    int nkeys = 0;
    pg_call([&] {
        if (news) collect_keys(news, desc, src, stride, +1, keys, &nkeys);
        if (olds) collect_keys(olds, desc, src, stride, -1, keys, &nkeys);
        insert_keys(delta, src, cfg, keys, nkeys);
    });
    return true;
}

/* Relations whose BEFORE TRUNCATE trigger has handled the current TRUNCATE
 * (cleared by their AFTER TRUNCATE trigger), so that the partitions of a
 * truncated table do not subtract their rows a second time. */
constexpr int max_truncating = 64;
LocalTransactionId truncating_lxid = InvalidLocalTransactionId;
Oid truncating[max_truncating];
int n_truncating = 0;

bool truncating_contains(Oid rel) {
    for (int i = 0; i < n_truncating; ++i) {
        if (truncating[i] == rel) return true;
    }
    return false;
}

}  // namespace

/* lifecycle.count_capture() RETURNS trigger */
LIFECYCLE_FUNCTION(lifecycle_count_capture) {
    TriggerData* td = trigger_data(fcinfo, "count_capture");
    if (!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || !TRIGGER_FIRED_AFTER(td->tg_event)) {
        throw Error(sqlstate::wrong_object_state, "lifecycle.count_capture() must be an AFTER ... FOR EACH STATEMENT trigger");
    }
    Config cfg = config_of(td);
    if ((TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) &&
        td->tg_trigger->tgnewtable == nullptr) {
        throw Error(sqlstate::wrong_object_state, "lifecycle.count_capture() needs a NEW TABLE transition table");
    }
    if ((TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) &&
        td->tg_trigger->tgoldtable == nullptr) {
        throw Error(sqlstate::wrong_object_state, "lifecycle.count_capture() needs an OLD TABLE transition table");
    }
    if (capture_small(cfg, td)) return PointerGetDatum(nullptr);
    std::string sql = capture_sql(cfg, td);
    Oid types[1] = {INT8OID};
    Datum values[1] = {cfg.has_time() ? bucket_interval(cfg) : (Datum)0};
    int nargs = cfg.has_time() ? 1 : 0;

    bridge::SpiConnection spi;
    pg_call([td] {
        if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER) elog(ERROR, "SPI_register_trigger_data failed");
    });
    SPIPlanPtr plan = cached_plan(sql, nargs, types);
    bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
    int rc = bridge::execute_plan(plan, values, nullptr, false, 0);
    if (rc != SPI_OK_INSERT) throw Error(sqlstate::internal_error, fmt::format("count capture failed: {}", sql));
    return PointerGetDatum(nullptr);
}

/* lifecycle.count_truncate() RETURNS trigger */
LIFECYCLE_FUNCTION(lifecycle_count_truncate) {
    TriggerData* td = trigger_data(fcinfo, "count_truncate");
    if (!TRIGGER_FIRED_BY_TRUNCATE(td->tg_event)) {
        throw Error(sqlstate::wrong_object_state, "lifecycle.count_truncate() must be a TRUNCATE trigger");
    }
    if (compat::my_lxid() != truncating_lxid) {
        truncating_lxid = compat::my_lxid();
        n_truncating = 0;
    }
    Oid rel = RelationGetRelid(td->tg_relation);
    if (TRIGGER_FIRED_AFTER(td->tg_event)) {
        for (int i = 0; i < n_truncating; ++i) {
            if (truncating[i] == rel) truncating[i] = truncating[--n_truncating];
        }
        return PointerGetDatum(nullptr);
    }
    if (td->tg_relation->rd_rel->relispartition) {
        List* ancestors = pg_call([rel] { return get_partition_ancestors(rel); });
        ListCell* lc;
        foreach (lc, ancestors) {
            if (truncating_contains(lfirst_oid(lc))) return PointerGetDatum(nullptr);
        }
    }
    std::optional<Config> cfg = config_of(td);
    bridge::SpiConnection spi;
    if (rel == cfg->relid) {
        /* Like TRUNCATE itself (not MVCC-safe): older snapshots see empty
         * count tables just as they see an empty table. */
        bridge::AsRole owner(counts_owner(*cfg), SECURITY_RESTRICTED_OPERATION);
        bridge::execute_sql(cfg->has_time()
                                ? fmt::format("TRUNCATE {}, {}, {}", cfg->delta(), cfg->bucket(), cfg->total())
                                : fmt::format("TRUNCATE {}, {}", cfg->delta(), cfg->total()),
                            false);
    } else {
        scan_into_delta(*cfg, rel, -1);
    }
    if (n_truncating == max_truncating) {
        throw Error(sqlstate::feature_not_supported, "too many counted tables in one TRUNCATE");
    }
    truncating[n_truncating++] = rel;
    return PointerGetDatum(nullptr);
}

/* lifecycle.count_ddl() RETURNS event_trigger */
LIFECYCLE_FUNCTION(lifecycle_count_ddl) {
    if (!CALLED_AS_EVENT_TRIGGER(fcinfo)) {
        throw Error(sqlstate::wrong_object_state, "lifecycle.count_ddl() must be called as an event trigger");
    }
    if (creating_extension || own_ddl_depth > 0) PG_RETURN_VOID();
    auto* data = reinterpret_cast<EventTriggerData*>(fcinfo->context);
    /* The catalogs as the command left them (its own changes included), also in
     * a REPEATABLE READ transaction: our queries read them through SPI. */
    pg_call([] {
        CommandCounterIncrement();
        PushActiveSnapshot(GetLatestSnapshot());
    });
    {
        bridge::SpiConnection spi;
        if (std::strcmp(data->event, "ddl_command_start") == 0) {
            before_drop(data->parsetree);
        } else {
            reconcile_after_ddl(std::strcmp(data->event, "sql_drop") == 0);
        }
    }
    pg_call([] { PopActiveSnapshot(); });
    PG_RETURN_VOID();
}
