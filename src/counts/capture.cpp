/*
 * capture.cpp — the triggers that keep exact counts:
 *
 *  lifecycle.count_capture()   AFTER INSERT/UPDATE/DELETE ... FOR EACH STATEMENT
 *                              with transition tables: appends one row per
 *                              (dims, bucket, live) group of the statement to
 *                              count_N_delta (+n for new rows, -n for old).
 *                              COPY, MERGE, ON CONFLICT, FK cascades and
 *                              cross-partition UPDATEs all come through here
 *                              (MERGE on a partitioned table with the help of
 *                              an executor hook: see below).
 *  lifecycle.count_truncate()  BEFORE/AFTER TRUNCATE: the counted table's own
 *                              TRUNCATE empties its count tables; a partition's
 *                              subtracts that partition's rows (unless an
 *                              ancestor is truncated by the same command).
 *  lifecycle.count_ddl()       the event triggers (see ddl.cpp).
 */
#include "bridge/function.hpp"
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"

using namespace pg_lifecycle;
using namespace pg_lifecycle::counts;
using bridge::pg_call;

namespace {

TriggerData* trigger_data(FunctionCallInfo fcinfo, const char* name) {
    if (!CALLED_AS_TRIGGER(fcinfo)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated,
                    fmt::format("lifecycle.{}() must be called as a trigger", name));
    }
    return reinterpret_cast<TriggerData*>(fcinfo->context);
}

/* The configuration of the counted table the trigger fires on (or of its
 * root, for a partition), from the registry — never from the trigger's
 * arguments, which whoever created the trigger chose. */
Config config_of(TriggerData* td) {
    Oid rel = RelationGetRelid(td->tg_relation);
    std::optional<Config> cfg = config_for_relation(rel);
    if (!cfg) {
        throw Error(
            sqlstate::object_not_in_prerequisite_state,
            fmt::format("table {} is not counted by pg_lifecycle", relation_display_name(rel)),
            fmt::format("Trigger \"{}\" calls a function of pg_lifecycle's exact counts.", td->tg_trigger->tgname),
            "Drop the trigger; lifecycle.count_enable creates the triggers counting needs.");
    }
    return *cfg;
}

bool has_deleted_at(Relation rel) {
    TupleDesc desc = RelationGetDescr(rel);
    for (int i = 0; i < desc->natts; ++i) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (!att->attisdropped && std::strcmp(NameStr(att->attname), softdelete::deleted_at_column) == 0) return true;
    }
    return false;
}

/* Where a statement's deltas go: the counted table's count_N_delta, or on a
 * Citus node the delta shard colocated with the shard the trigger fires on
 * (with the distribution column's value of one of each group's rows as
 * lc_dist, which keeps the row in that shard's hash range). */
struct Target {
    std::string delta; /* qualified, quoted */
    Oid delta_oid = InvalidOid;
    std::string dist_column; /* empty: no lc_dist */
};

std::string capture_sql(const Config& cfg, TriggerData* td, const Target& target) {
    const Trigger* trig = td->tg_trigger;
    std::string dims = cfg.dim_list();
    if (!target.dist_column.empty()) {
        /* lc_dist is carried through the grouping as an aggregate */
        std::string dist = bridge::quote_ident(target.dist_column);
        std::string cols = dims.empty() ? "" : dims + ", ";
        std::string live = (has_deleted_at(td->tg_relation) ? fmt::format("({} IS NULL)", softdelete::deleted_at_column)
                                                            : std::string("true"));
        std::string bucket = cfg.has_time() ? bucket_expression(cfg, 1) + " AS lc_bucket, " : std::string();
        int ngroup = static_cast<int>(cfg.dims.size()) + (cfg.has_time() ? 1 : 0) + 1;
        std::string group;
        for (int i = 1; i <= ngroup; ++i) group += (i > 1 ? ", " : "") + std::to_string(i);
        std::string columns = fmt::format("{}{}lc_live", cols, cfg.has_time() ? "lc_bucket, " : "");
        std::string rows;
        if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
            rows = fmt::format(
                "SELECT {0}{1}{2} AS lc_live, {3} AS lc_d, 1 AS lc_s FROM {4} UNION ALL "
                "SELECT {0}{1}{2}, {3}, -1 FROM {5}",
                cols, bucket, live, dist, bridge::quote_ident(trig->tgnewtable), bridge::quote_ident(trig->tgoldtable));
        } else {
            bool insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
            rows = fmt::format("SELECT {}{}{} AS lc_live, {} AS lc_d, {} AS lc_s FROM {}", cols, bucket, live, dist,
                               insert ? "1" : "-1", bridge::quote_ident(insert ? trig->tgnewtable : trig->tgoldtable));
        }
        return fmt::format(
            "INSERT INTO {0} ({1}, lc_dist, lc_delta) SELECT {1}, (pg_catalog.array_agg(lc_d))[1], "
            "pg_catalog.sum(lc_s) FROM ({2}) x GROUP BY {3} HAVING pg_catalog.sum(lc_s) <> 0",
            target.delta, columns, rows, group);
    }
    std::string sep = dims.empty() ? "" : ", ";
    std::string live = (has_deleted_at(td->tg_relation) ? fmt::format("({} IS NULL)", softdelete::deleted_at_column)
                                                        : std::string("true"));
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
            target.delta, columns, fmt::format("{}{}", dims, sep), cfg.has_time() ? bucket + " AS lc_bucket, " : "",
            live, bridge::quote_ident(trig->tgnewtable), bridge::quote_ident(trig->tgoldtable), group);
    }
    bool insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
    return fmt::format("INSERT INTO {} ({}, lc_delta) SELECT {}, {}pg_catalog.count(*) FROM {} GROUP BY {}",
                       target.delta, columns, keys, insert ? "" : "-",
                       bridge::quote_ident(insert ? trig->tgnewtable : trig->tgoldtable), group);
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
    Datum dist; /* lc_dist: the distribution column of the group's first row */
    bool dist_null;
};

struct SourceColumns {
    int ndims = 0;
    AttrNumber dims[fast_path_max_dims];
    int16 typlen[fast_path_max_dims];
    bool typbyval[fast_path_max_dims];
    Oid typid[fast_path_max_dims];
    AttrNumber time = InvalidAttrNumber;
    AttrNumber deleted_at = InvalidAttrNumber;
    AttrNumber dist = InvalidAttrNumber; /* Citus: the distribution column, for lc_dist */
    int16 dist_typlen = 0;
    bool dist_typbyval = false;
    Oid dist_typid = InvalidOid;
};

/* Column numbers of the dimensions, time column and deleted_at in `desc`;
 * false when one is missing (the SPI path then reports it). */
bool source_columns(const Config& cfg, TupleDesc desc, const std::string& dist, SourceColumns& out) {
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
        if (std::strcmp(name, softdelete::deleted_at_column) == 0) out.deleted_at = att->attnum;
        if (!dist.empty() && dist == name) {
            out.dist = att->attnum;
            out.dist_typlen = att->attlen;
            out.dist_typbyval = att->attbyval;
            out.dist_typid = att->atttypid;
        }
    }
    if (!dist.empty() && out.dist == InvalidAttrNumber) return false;
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
        k.dist = (Datum)0;
        k.dist_null = true;
        if (src.dist != InvalidAttrNumber) {
            Datum v = slot_getattr(slot, src.dist, &k.dist_null);
            if (!k.dist_null) k.dist = datumCopy(v, src.dist_typbyval, src.dist_typlen);
        }
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
        else if (std::strcmp(name, "lc_dist") == 0 && src.dist != InvalidAttrNumber) role[i] = -5;
        else {
            for (int d = 0; d < src.ndims; ++d) {
                if (cfg.dims[d] == name) role[i] = d;
            }
        }
        /* Never form a tuple whose values do not match the delta table's
         * column types (check_columns refuses DDL that would cause it). */
        Oid expected = role[i] >= 0    ? src.typid[role[i]]
                       : role[i] == -1 ? TIMESTAMPTZOID
                       : role[i] == -2 ? BOOLOID
                       : role[i] == -3 ? INT8OID
                       : role[i] == -5 ? src.dist_typid
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
                case -5:
                    nulls[i] = keys[k].dist_null;
                    values[i] = keys[k].dist;
                    break;
                default: nulls[i] = keys[k].nulls[role[i]]; values[i] = keys[k].dims[role[i]];
            }
        }
        HeapTuple tup = heap_form_tuple(dd, values, nulls);
        simple_heap_insert(delta, tup);
        heap_freetuple(tup);
    }
    table_close(delta, NoLock);
}

/* The fast path; false when the statement is too big for it. */
bool capture_small(const Config& cfg, TriggerData* td, const Target& target) {
    if (cfg.dims.size() > static_cast<size_t>(fast_path_max_dims)) return false;
    Tuplestorestate* news = TRIGGER_FIRED_BY_DELETE(td->tg_event) ? nullptr : td->tg_newtable;
    Tuplestorestate* olds = TRIGGER_FIRED_BY_INSERT(td->tg_event) ? nullptr : td->tg_oldtable;
    int64 rows =
        pg_call([&] { return (news ? tuplestore_tuple_count(news) : 0) + (olds ? tuplestore_tuple_count(olds) : 0); });
    if (rows > fast_path_max_rows) return false;
    if (rows == 0) return true;
    TupleDesc desc = RelationGetDescr(td->tg_relation);
    SourceColumns src;
    if (!source_columns(cfg, desc, target.dist_column, src)) return false;
    Oid delta = target.delta_oid;
    if (delta == InvalidOid) return false;
    int64 stride = cfg.has_time() ? DatumGetInt64(bucket_interval(cfg)) : 1; /* the deltas' (fine) buckets */
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
 * truncated table do not subtract their rows a second time.  Each entry
 * remembers the subtransaction that added it: a TRUNCATE that fails after
 * our BEFORE trigger ran (in another table's trigger, say) never reaches the
 * AFTER trigger, and the abort of its subtransaction (or transaction) drops
 * the entry with the rest of the TRUNCATE's work. */
constexpr int max_truncating = 64;
LocalTransactionId truncating_lxid = InvalidLocalTransactionId;
Oid truncating[max_truncating];
SubTransactionId truncating_subxact[max_truncating];
int n_truncating = 0;

bool truncating_contains(Oid rel) {
    for (int i = 0; i < n_truncating; ++i) {
        if (truncating[i] == rel) return true;
    }
    return false;
}

/* No allocation, no error: only forget or re-parent entries. */
extern "C" void truncating_subxact_callback(SubXactEvent event, SubTransactionId sub, SubTransactionId parent, void*) {
    if (n_truncating == 0 || MyProc == nullptr || compat::my_lxid() != truncating_lxid) return;
    if (event == SUBXACT_EVENT_ABORT_SUB) {
        /* Entries of this subtransaction or of any of its children (whose ids
         * are larger: they started after it and while it was open). */
        for (int i = 0; i < n_truncating;) {
            if (truncating_subxact[i] >= sub) {
                truncating[i] = truncating[n_truncating - 1];
                truncating_subxact[i] = truncating_subxact[n_truncating - 1];
                --n_truncating;
            } else {
                ++i;
            }
        }
    } else if (event == SUBXACT_EVENT_COMMIT_SUB) {
        for (int i = 0; i < n_truncating; ++i) {
            if (truncating_subxact[i] == sub) truncating_subxact[i] = parent;
        }
    }
}

/* ------------------------------------------------------------------------
 * MERGE moving rows between partitions.  PostgreSQL 15 puts a row that a
 * MERGE ... UPDATE moves to another partition into the statement's DELETE
 * (old row) and INSERT (new row) transition tables, not the UPDATE ones; but
 * it fires the AFTER INSERT/DELETE statement triggers only when the MERGE has
 * an INSERT/DELETE action.  After a MERGE on a counted partitioned table has
 * run, its missing AFTER INSERT/DELETE statement events are queued for our
 * own capture triggers alone (never the table's other triggers), over those
 * transition tables: the moved rows are counted where they went.
 * ------------------------------------------------------------------------ */

ExecutorRun_hook_type prev_executor_run = nullptr;
ExecutorFinish_hook_type prev_executor_finish = nullptr;

/* The top-level statement during which the library was loaded (without
 * shared_preload_libraries, by our first trigger or function call): a MERGE
 * running then started before the hook existed. */
LocalTransactionId loaded_lxid = InvalidLocalTransactionId;
TimestampTz loaded_statement = 0;

/* A MERGE on a partitioned table whose executor started before our hook was
 * installed may have moved rows we will never see: refuse it (it can simply
 * be retried, the library being loaded now) rather than count wrong. */
void refuse_merge_started_before_load(TriggerData* td) {
    if (loaded_lxid == InvalidLocalTransactionId || MyProc == nullptr || compat::my_lxid() != loaded_lxid) return;
    if (GetCurrentStatementStartTimestamp() != loaded_statement) return;
    if (td->tg_relation->rd_rel->relkind != RELKIND_PARTITIONED_TABLE) return;
    if (ActivePortal == nullptr || ActivePortal->commandTag != CMDTAG_MERGE) return;
    throw Error(sqlstate::object_not_in_prerequisite_state,
                fmt::format("pg_lifecycle was loaded while this MERGE on counted table {} was running",
                            relation_display_name(RelationGetRelid(td->tg_relation))),
                "Rows a MERGE moves between partitions are counted by a hook that did not exist when it started.",
                "Retry the statement (the library is loaded now), or add pg_lifecycle to shared_preload_libraries.");
}

/* Our capture trigger `suffix` ("ins"/"del") of counted table `cfg` in trigdesc. */
Trigger* our_trigger(TriggerDesc* trigdesc, const Config& cfg, const char* suffix) {
    if (trigdesc == nullptr) return nullptr;
    std::string name = fmt::format("lifecycle_count_{}_{}", cfg.id, suffix);
    for (int i = 0; i < trigdesc->numtriggers; ++i) {
        if (name == trigdesc->triggers[i].tgname) return &trigdesc->triggers[i];
    }
    return nullptr;
}

/* The MERGE of this node, if it is one. */
ModifyTableState* merge_node(PlanState* ps) {
    if (ps == nullptr || !IsA(ps, ModifyTableState)) return nullptr;
    auto* mt = reinterpret_cast<ModifyTableState*>(ps);
    return mt->operation == CMD_MERGE ? mt : nullptr;
}

void queue_merge_moves(ModifyTableState* mt, EState* estate) {
    if (mt == nullptr) return;
    if (!mt->mt_done || mt->mt_transition_capture == nullptr || mt->rootResultRelInfo == nullptr) return;
    int missing = ~mt->mt_merge_subcommands & (MERGE_INSERT | MERGE_DELETE);
    if (missing == 0 || !(mt->mt_merge_subcommands & MERGE_UPDATE)) return;
    ResultRelInfo* root = mt->rootResultRelInfo;
    if (root->ri_RelationDesc->rd_rel->relkind != RELKIND_PARTITIONED_TABLE) return;
    std::optional<Config> found = config_for_relation(RelationGetRelid(root->ri_RelationDesc));
    if (!found) return;
    Config cfg = std::move(*found);
    TransitionCaptureState* tcs = mt->mt_transition_capture;
    pg_call([&] {
        auto queue = [&](Trigger* trigger, bool insert) {
            if (trigger == nullptr) return;
            /* A copy of the target whose only trigger is ours: the event is
             * queued for it alone, and fires it by its oid. */
            TriggerDesc* only = static_cast<TriggerDesc*>(palloc0(sizeof(TriggerDesc)));
            only->numtriggers = 1;
            only->triggers = trigger;
            ResultRelInfo* target = makeNode(ResultRelInfo);
            *target = *root;
            target->ri_TrigDesc = only;
            if (insert) {
                if (!tcs->tcs_insert_new_table || tcs->tcs_insert_private == nullptr) return;
                only->trig_insert_after_statement = true;
                only->trig_insert_new_table = true;
                ExecASInsertTriggers(estate, target, tcs);
            } else {
                if (!tcs->tcs_delete_old_table || tcs->tcs_delete_private == nullptr) return;
                only->trig_delete_after_statement = true;
                only->trig_delete_old_table = true;
                ExecASDeleteTriggers(estate, target, tcs);
            }
        };
        if (missing & MERGE_INSERT) queue(our_trigger(root->ri_TrigDesc, cfg, "ins"), true);
        if (missing & MERGE_DELETE) queue(our_trigger(root->ri_TrigDesc, cfg, "del"), false);
    });
}

/* ------------------------------------------------------------------------
 * MERGE inserting into a partitioned table, then updating rows in place.
 * Routing a MERGE INSERT through the partitioned root remembers the inserted
 * slot in the statement's tcs_original_insert_tuple (ExecPrepareTupleRouting),
 * and only a row moved to another partition forgets it again
 * (ExecCrossPartitionUpdate); row capture (AfterTriggerSaveEvent ->
 * TransitionTableAddTuple) stores that slot, when set, as the NEW row of any
 * event, an UPDATE's too.  Where PostgreSQL has this bug (18.6 here; 15.18's
 * code is the same; 15.20 and 17.12 no longer do it), each row a later
 * UPDATE action of that MERGE changes within its partition appears in the
 * UPDATE NEW transition table as the row last inserted: counted wrong.
 *
 * Which minor release the server runs is not known when we are built, so on
 * every version a MERGE with INSERT and UPDATE actions on a counted
 * partitioned table has its source plan wrapped: the remembered slot is
 * forgotten before each source row is read, and an INSERT routed for that
 * row remembers its own again before it is captured (a no-op where
 * PostgreSQL is fixed).
 * ------------------------------------------------------------------------ */

/* One wrapped source plan; lives in the query's memory context, whose reset
 * unlinks it. */
struct MergeSource {
    PlanState* node;
    ExecProcNodeMtd real;
    TransitionCaptureState* tcs;
    MergeSource* next;
    MemoryContextCallback forget;
};
MergeSource* merge_sources = nullptr;

/* The executor's call for the next source row: plain C, no C++ object in
 * the frame (the plan below may raise an error through it). */
extern "C" TupleTableSlot* merge_source_next(PlanState* node) {
    for (MergeSource* s = merge_sources; s != nullptr; s = s->next) {
        if (s->node == node) {
            s->tcs->tcs_original_insert_tuple = nullptr;
            return s->real(node);
        }
    }
    elog(ERROR, "pg_lifecycle: MERGE source plan node not registered");
    return nullptr;
}

/* Memory context reset callback: no allocation, no error. */
extern "C" void forget_merge_source(void* arg) {
    for (MergeSource** p = &merge_sources; *p != nullptr; p = &(*p)->next) {
        if (*p == arg) {
            *p = (*p)->next;
            return;
        }
    }
}

void wrap_merge_source(ModifyTableState* mt, EState* estate) {
    if (mt == nullptr) return;
    constexpr int insert_and_update = MERGE_INSERT | MERGE_UPDATE;
    if ((mt->mt_merge_subcommands & insert_and_update) != insert_and_update) return;
    if (mt->mt_transition_capture == nullptr || mt->rootResultRelInfo == nullptr) return;
    Relation root = mt->rootResultRelInfo->ri_RelationDesc;
    if (root->rd_rel->relkind != RELKIND_PARTITIONED_TABLE) return;
    PlanState* source = outerPlanState(mt);
    if (source == nullptr || source->ExecProcNodeReal == merge_source_next) return; /* run again */
    if (!is_counted(RelationGetRelid(root))) return;
    pg_call([&] {
        auto* s = static_cast<MergeSource*>(MemoryContextAllocZero(estate->es_query_cxt, sizeof(MergeSource)));
        s->node = source;
        s->real = source->ExecProcNodeReal;
        s->tcs = mt->mt_transition_capture;
        s->forget.func = forget_merge_source;
        s->forget.arg = s;
        MemoryContextRegisterResetCallback(estate->es_query_cxt, &s->forget);
        s->next = merge_sources;
        merge_sources = s;
        /* ExecProcNodeFirst and ExecProcNodeInstr call ExecProcNodeReal; a
         * node already run calls it directly. */
        if (source->ExecProcNode == s->real) source->ExecProcNode = merge_source_next;
        source->ExecProcNodeReal = merge_source_next;
    });
}

/* The MERGE statements of WITH clauses (17+: MERGE ... RETURNING in a CTE). */
std::vector<ModifyTableState*> cte_merges(EState* estate) {
    std::vector<ModifyTableState*> out;
    ListCell* lc;
    foreach (lc, estate->es_auxmodifytables) {
        if (ModifyTableState* mt = merge_node(static_cast<PlanState*>(lfirst(lc)))) out.push_back(mt);
    }
    return out;
}

extern "C" void lifecycle_executor_run(QueryDesc* qd, ScanDirection direction,
                                       uint64 count LIFECYCLE_EXECUTE_ONCE_PARAM) {
    bridge::entry_guard([qd] {
        if (qd->operation == CMD_MERGE) wrap_merge_source(merge_node(qd->planstate), qd->estate);
        for (ModifyTableState* mt : cte_merges(qd->estate)) wrap_merge_source(mt, qd->estate);
    });
    if (prev_executor_run) {
        prev_executor_run(qd, direction, count LIFECYCLE_EXECUTE_ONCE_ARG);
    } else {
        standard_ExecutorRun(qd, direction, count LIFECYCLE_EXECUTE_ONCE_ARG);
    }
    if (qd->operation == CMD_MERGE)
        bridge::entry_guard([qd] { queue_merge_moves(merge_node(qd->planstate), qd->estate); });
}

/* A MERGE in a WITH clause ends while the statement runs (when the outer
 * query reads it to the end) or only when the statement finishes
 * (ExecPostprocessPlan, in ExecutorFinish, right before the statement's
 * AFTER triggers fire): here, a MERGE of a counted partitioned table not yet
 * ended is run to its end first, the same way, and its missing statement
 * events are queued. */
extern "C" void lifecycle_executor_finish(QueryDesc* qd) {
    bridge::entry_guard([qd] {
        EState* estate = qd->estate;
        for (ModifyTableState* mt : cte_merges(estate)) {
            if (mt->rootResultRelInfo == nullptr || mt->mt_transition_capture == nullptr) continue;
            Relation root = mt->rootResultRelInfo->ri_RelationDesc;
            if (root->rd_rel->relkind != RELKIND_PARTITIONED_TABLE) continue;
            if (!is_counted(RelationGetRelid(root))) continue;
            if (!mt->mt_done)
                pg_call([&] {
                    MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
                    ScanDirection direction = estate->es_direction;
                    estate->es_direction = ForwardScanDirection;
                    for (;;) {
                        ResetPerTupleExprContext(estate);
                        TupleTableSlot* slot = ExecProcNode(&mt->ps);
                        if (TupIsNull(slot)) break;
                    }
                    estate->es_direction = direction;
                    MemoryContextSwitchTo(old);
                });
            queue_merge_moves(mt, estate);
        }
    });
    if (prev_executor_finish) {
        prev_executor_finish(qd);
    } else {
        standard_ExecutorFinish(qd);
    }
}

}  // namespace

/* lifecycle.count_capture() RETURNS trigger */
LIFECYCLE_FUNCTION(lifecycle_count_capture) {
    TriggerData* td = trigger_data(fcinfo, "count_capture");
    if (!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || !TRIGGER_FIRED_AFTER(td->tg_event)) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    "lifecycle.count_capture() must be an AFTER ... FOR EACH STATEMENT trigger");
    }
    Oid rel = RelationGetRelid(td->tg_relation);
    std::optional<Config> registered = config_for_relation(rel);
    Target target;
    Config cfg;
    if (registered) {
        /* A Citus table's own relation on the coordinator holds no rows: its
         * shards count. */
        if (citus::kind(registered->relid) != citus::Kind::none) return PointerGetDatum(nullptr);
        cfg = std::move(*registered);
        target.delta = cfg.delta();
        target.delta_oid = lifecycle_relation(cfg.table_name("delta"));
    } else if (auto shard = citus::shard_capture(rel, td->tg_trigger); shard && td->tg_trigger->tgnargs >= 3) {
        /* A shard moved or split by logical replication: its deltas arrive
         * the same way, with the colocated delta shard's changes. */
        if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA) return PointerGetDatum(nullptr);
        cfg = shard->cfg;
        target.delta = "lifecycle." + bridge::quote_ident(shard->delta_name);
        target.delta_oid = shard->delta;
        target.dist_column = shard->dist_column;
    } else {
        cfg = config_of(td); /* raises */
    }
    if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) refuse_merge_started_before_load(td);
    if ((TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) &&
        td->tg_trigger->tgnewtable == nullptr) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    "lifecycle.count_capture() needs a NEW TABLE transition table");
    }
    if ((TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) &&
        td->tg_trigger->tgoldtable == nullptr) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    "lifecycle.count_capture() needs an OLD TABLE transition table");
    }
    if (capture_small(cfg, td, target)) return PointerGetDatum(nullptr);
    std::string sql = capture_sql(cfg, td, target);
    Oid types[1] = {INT8OID};
    Datum values[1] = {cfg.has_time() ? bucket_interval(cfg) : (Datum)0};
    int nargs = cfg.has_time() ? 1 : 0;

    bridge::SpiConnection spi;
    pg_call([td] {
        if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER) elog(ERROR, "SPI_register_trigger_data failed");
    });
    SPIPlanPtr plan = cached_plan(sql, nargs, types);
    bridge::AsRole owner(target.delta_oid != InvalidOid ? bridge::relation_owner(target.delta_oid) : counts_owner(cfg),
                         SECURITY_RESTRICTED_OPERATION);
    int rc = bridge::execute_plan(plan, values, nullptr, false, 0);
    if (rc != SPI_OK_INSERT) throw Error(sqlstate::internal_error, fmt::format("count capture failed: {}", sql));
    return PointerGetDatum(nullptr);
}

/* lifecycle.count_truncate() RETURNS trigger */
LIFECYCLE_FUNCTION(lifecycle_count_truncate) {
    TriggerData* td = trigger_data(fcinfo, "count_truncate");
    if (!TRIGGER_FIRED_BY_TRUNCATE(td->tg_event)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated,
                    "lifecycle.count_truncate() must be a TRUNCATE trigger");
    }
    if (compat::my_lxid() != truncating_lxid) {
        truncating_lxid = compat::my_lxid();
        n_truncating = 0;
    }
    Oid rel = RelationGetRelid(td->tg_relation);
    if (TRIGGER_FIRED_AFTER(td->tg_event)) {
        for (int i = 0; i < n_truncating; ++i) {
            if (truncating[i] == rel) {
                --n_truncating;
                truncating[i] = truncating[n_truncating];
                truncating_subxact[i] = truncating_subxact[n_truncating];
            }
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
    std::optional<Config> registered = config_for_relation(rel);
    if (!registered) {
        if (auto shard = citus::shard_capture(rel, td->tg_trigger)) {
            /* A shard of a Citus table: its colocated delta shard goes with it. */
            Oid delta = shard->delta;
            std::string sql = "TRUNCATE lifecycle." + bridge::quote_ident(shard->delta_name);
            bridge::SpiConnection spi;
            bridge::AsRole owner(bridge::relation_owner(delta), SECURITY_RESTRICTED_OPERATION);
            bridge::execute_sql(sql, false);
            return PointerGetDatum(nullptr);
        }
    } else if (citus::kind(registered->relid) != citus::Kind::none) {
        /* TRUNCATE of a Citus table through the coordinator (Citus does not
         * give TRUNCATE triggers to the shards): its deltas are truncated
         * through Citus in the same distributed transaction. */
        if (TRIGGER_FIRED_BEFORE(td->tg_event) && rel == registered->relid) {
            bridge::SpiConnection spi;
            citus::truncate(*registered);
        }
        return PointerGetDatum(nullptr);
    }
    std::optional<Config> cfg = config_of(td);
    bridge::SpiConnection spi;
    if (rel == cfg->relid) {
        /* Like TRUNCATE itself (not MVCC-safe): older snapshots see empty
         * count tables just as they see an empty table. */
        truncate_counts(*cfg);
    } else {
        scan_into_delta(*cfg, rel, -1);
    }
    if (n_truncating == max_truncating) {
        throw Error(sqlstate::feature_not_supported, "too many counted tables in one TRUNCATE");
    }
    truncating_subxact[n_truncating] = GetCurrentSubTransactionId();
    truncating[n_truncating++] = rel;
    return PointerGetDatum(nullptr);
}

/* lifecycle.count_ddl() RETURNS event_trigger */
LIFECYCLE_FUNCTION(lifecycle_count_ddl) {
    if (!CALLED_AS_EVENT_TRIGGER(fcinfo)) {
        throw Error(sqlstate::e_r_i_e_trigger_protocol_violated,
                    "lifecycle.count_ddl() must be called as an event trigger");
    }
    if (creating_extension || own_ddl_depth > 0) PG_RETURN_VOID();
    auto* data = reinterpret_cast<EventTriggerData*>(fcinfo->context);
    if (std::strcmp(data->event, "ddl_command_start") == 0 && data->parsetree != nullptr &&
        IsA(data->parsetree, AlterTableStmt)) {
        /* Every ALTER TABLE comes here: only DETACH ... CONCURRENTLY concerns us. */
        bool detach_concurrently = false;
        ListCell* cell;
        foreach (cell, castNode(AlterTableStmt, data->parsetree)->cmds) {
            auto* cmd = lfirst_node(AlterTableCmd, cell);
            if (cmd->subtype == AT_DetachPartition && cmd->def != nullptr &&
                castNode(PartitionCmd, cmd->def)->concurrent) {
                detach_concurrently = true;
            }
        }
        if (!detach_concurrently) PG_RETURN_VOID();
    }
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
            refuse_concurrent_detach(data->parsetree);
        } else {
            reconcile_after_ddl(std::strcmp(data->event, "sql_drop") == 0);
        }
    }
    pg_call([] { PopActiveSnapshot(); });
    PG_RETURN_VOID();
}

namespace pg_lifecycle::counts {

void init_capture() {
    pg_call([] {
        if (!process_shared_preload_libraries_in_progress && MyProc != nullptr && IsTransactionState()) {
            loaded_lxid = compat::my_lxid();
            loaded_statement = GetCurrentStatementStartTimestamp();
        }
        RegisterSubXactCallback(truncating_subxact_callback, nullptr);
        prev_executor_run = ExecutorRun_hook;
        ExecutorRun_hook = lifecycle_executor_run;
        prev_executor_finish = ExecutorFinish_hook;
        ExecutorFinish_hook = lifecycle_executor_finish;
    });
}

}  // namespace pg_lifecycle::counts
