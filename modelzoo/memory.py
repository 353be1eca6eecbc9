"""The memory plan: what a training process will hold, against what it may use, before anything is allocated.

The figures come from the training graph (run/graph.variable_bytes: tables, dense layers and their
optimizer slots, read from the variables' shapes) while it is being built, so a run that cannot fit is
refused before its session allocates a byte, naming the remedies. The peak of a run is more than its
variables: the process itself, the initial values of a table while it is initialized, the checkpoint
and evaluation copies. Those are folded into two constants measured with benchmarks/peak_memory.py
(the peak RSS of whole runs: start, train, checkpoint, evaluate, export) on DLRM and Wide & Deep:

| run | variables + slots | peak RSS | source |
|---|---:|---:|---|
| DLRM, shipped schema, 40 steps | 0.35 GB | 1.07 GB | benchmarks/results/peak_memory_dlrm.json |
| Wide & Deep, shipped schema, 40 steps | 2.74 GB | 3.76 GB | benchmarks/results/peak_memory_wide_and_deep.json |
| DLRM, real Kaggle cardinalities, 3,000 steps | 6.19 GB | 8.8 GB | issue 27's measurement |

PEAK_FACTOR is the largest slope between those runs ((8.8 - 1.07) / (6.19 - 0.35) = 1.32, rounded up)
and PROCESS_BYTES the intercept it leaves, raised to 0.75 GB by a later DLRM run on 50,000 generated
rows (110 steps in 5 evaluated epochs, early stopping, export: 1.205 GB peak for 0.35 GB of variables;
each training segment builds its graphs again), so the plan is at or above each measured peak (1.22,
4.39 and 8.98 GB planned): a plan that errs refuses a run that would have fitted by a few percent,
never lets one die an hour in. Since then three copies are gone (run/graph.initialization, the
checkpoint guard's two scalars, the system allocator instead of oneDNN's pool: see docs/results.md), and
the third run peaks at 7.57 GB for 6.49 GB (benchmarks/results/scale_ev_full.md, 4.58M held-out rows
evaluated): the constants are kept, so the plan (9.84 GB) errs 30% high there rather than low elsewhere.
A small run's peak varies more than that: the same 2-step DLRM run peaked at 1.106 GB alone and at
1.54 GB while the whole test suite loaded the machine, so for small runs the plan is a floor; the
constants matter where the slope does, for tables of many GB.

Dynamic tables (--ev) grow with the ids admitted, and TFRA's table (a libcuckoo hash map, 4 slots a
bucket) holds a power of two of slots: it doubles when its ids fill more than about 95% of them, and the old
slots stay until the new ones are filled. Its checkpoint exports each table's keys and values beside it. So
a table of width d storing n ids, with its optimizer's slot tables (LazyAdam: 2 more of the same keys), peaks
at max(1.5 x held, held + payload) where held = tables x slots x (8 + 4d + TFRA_SLOT_OVERHEAD), slots the
power of two at or above n / TFRA_MAX_LOAD, and payload = tables x n x (8 + 4d). Measured
(benchmarks/tfra_capacity.py, results tfra_capacity and tfra_capacity_load): one width-16 table holds 78.4
bytes a slot (TFRA_SLOT_OVERHEAD = 6.4: libcuckoo's partial keys and occupancy), doubled its 2,097,152 and
4,194,304 slots after 95.4% of them were filled and before 97.8% and 96.6% (TFRA_MAX_LOAD = 0.95), held 1.47x
its new size while doubling, and its export added its payload. n is each column's `expected_ids` (what
`schema infer` estimates; else its `hash_buckets`), at most the training rows; with --emb_fusion the columns
of a width share one table, whose n is their sum. DLRM --ev over one epoch of 3.6M generated rows (3.59M
ids stored, --schema criteo_full) peaked at 2.56 GB where this plan gives 2.56 GB with the stored ids.
The plan is as good as its ids: criteo_full's hash_buckets (33.8M) are twice the 16.5M distinct ids of
generated training rows (benchmarks/distinct_ids.py), and `schema infer` on that file estimated about 2x
too (Heaps' law from 100,000 rows overshoots a vocabulary that saturates).
An exact count an id (--ev_filter counter, --adaptive_emb, --dynamic_ev) and a last-updated step an id (gstep
eviction, --incremental_ckpt) are two more TFRA tables of width 1 for the same ids, planned alike: their key and
value sit in a slot aligned to the 8-byte key (16 bytes for the int32 count as for the int64 step), and
measured (results tfra_capacity_int32 and tfra_capacity_int64) 20.6 and 20.7 bytes a slot, doubling at 95.4%
full like the rows' tables; the plan's 22.4 errs 8% high there.

The evaluation adds the exact AUC's counts (modelzoo/metrics.py: 20 bytes a distinct score, at most one
distinct score a held-out row, and a merge peaks at 4.9x its state): EVAL_BYTES_PER_ROW = 100 a held-out row,
held by the process that evaluates. DLRM's default on 45.8M generated rows (benchmarks/scale.py, 4.58M held
out) peaked at 1.40 GB where the runs with 0.1M-1.6M held-out rows peaked at 1.14-1.17 GB: 55 bytes a
held-out row above them, which the 100 covers.
No TensorFlow import here.
"""
import math
import os

GB = 10 ** 9  # (as the peak_memory results and issue 27 count)
PEAK_FACTOR = 1.33
PROCESS_BYTES = int(0.75 * GB)
TFRA_SLOT_OVERHEAD = 6.4  # bytes a slot of TFRA's table beyond its key and values (see above)
TFRA_MAX_LOAD = 0.95  # the share of its slots a TFRA table fills before it doubles them (see above)
EVAL_BYTES_PER_ROW = 100
WARN_FRACTION = 0.9  # a plan above this share of the limit is said, not refused
LIMIT_VARIABLE = "MODELZOO_MEMORY_LIMIT_MB"  # overrides the detected limit (a test, or memory shared with others)


class MemoryPlanError(Exception):
    """A run whose planned memory exceeds what the process may use; the message names the remedies."""


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 says "max" when unlimited


def memory_limit():
    """(bytes the process may use, where that figure comes from): MODELZOO_MEMORY_LIMIT_MB, the cgroup's
    limit (a Kubernetes pod's resources.limits.memory), else the machine's RAM."""
    given = os.environ.get(LIMIT_VARIABLE)
    if given:
        try:
            return int(float(given) * (1 << 20)), LIMIT_VARIABLE
        except ValueError:
            raise MemoryPlanError(f"{LIMIT_VARIABLE}={given!r}: expected a number of MB") from None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = _read_int(path)
        if value and value < (1 << 60):  # (cgroup v1 says a huge number when unlimited)
            return value, "the cgroup limit"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024, "the machine's RAM"
    except OSError:
        pass
    return None, "unknown"


def tfra_table_bytes(ids, dim, tables, value_bytes=4):
    """The peak bytes of `tables` TFRA tables (a table and its optimizer slot tables) of width `dim` storing
    `ids` keys each: the doubling of their slots, or their checkpoint's export beside them. `value_bytes`: a
    value's element (4: float32 rows and --ev's int32 counts; 8: the int64 last-updated steps)."""
    if ids <= 0:
        return 0
    slots = 1 << max(0, math.ceil(math.log2(ids / TFRA_MAX_LOAD)))
    entry = 8 + value_bytes * dim  # a key and its values, as the export writes them
    stored = 8 * math.ceil(entry / 8)  # in a slot: the pair aligned to its 8-byte key (an int32 count: 16 bytes)
    held = tables * slots * (stored + TFRA_SLOT_OVERHEAD)
    payload = tables * ids * entry
    return int(max(1.5 * held, held + payload))


def dynamic_tables_plan(schema, slots_per_row, fused=False, train_rows=None, counts=False, last_steps=False):
    """The plan for --ev's tables, per TFRA table (a column's name, or `fused_dimD` with --emb_fusion): its
    columns' stored ids (Column.stored_ids, each at most `train_rows`), with `slots_per_row` optimizer slot
    tables of the same width (tfra_table_bytes); with `counts` (an exact count an id: --ev_filter counter,
    --adaptive_emb, --dynamic_ev) its NAME/count table, and with `last_steps` (gstep eviction, --incremental_ckpt)
    its NAME/last_step table, each one value for every id seen."""
    ids = {}
    for c in schema.tables:
        n = c.stored_ids if train_rows is None else min(c.stored_ids, train_rows)
        key = (f"fused_dim{c.embedding_dim}", c.embedding_dim) if fused else (c.name, c.embedding_dim)
        ids[key] = ids.get(key, 0) + n
    plan = {}
    for (name, dim), n in ids.items():
        plan[name] = tfra_table_bytes(n, dim, 1 + slots_per_row)
        if counts:
            plan[f"{name}/count"] = tfra_table_bytes(n, 1, 1, value_bytes=4)
        if last_steps:
            plan[f"{name}/last_step"] = tfra_table_bytes(n, 1, 1, value_bytes=8)
    return plan


def dynamic_table_bytes(schema, slots_per_row, fused=False, train_rows=None, counts=False, last_steps=False):
    """The plan for --ev's tables in all (dynamic_tables_plan summed)."""
    return sum(dynamic_tables_plan(schema, slots_per_row, fused, train_rows, counts, last_steps).values())


def evaluation_bytes(eval_rows):
    """What evaluating `eval_rows` held-out rows adds to the peak (the exact AUC's counts at a merge)."""
    return int(EVAL_BYTES_PER_ROW * eval_rows)


def record(sizes, dynamic_tables=None, parameter_servers=0, limit=None, source=None, eval_bytes=0):
    """The plan as result.json keeps it (`memory_plan`), beside the run's measured peak RSS (peak_rss_mb):
    the planned peak, the limit it was held against, and with --ev each table's planned bytes."""
    if limit is None:
        limit, source = memory_limit()
    dynamic = sum((dynamic_tables or {}).values())
    out = {"planned_peak_bytes": plan_bytes(sizes, dynamic, eval_bytes), "limit_bytes": limit,
           "limit_source": source, "peak_factor": PEAK_FACTOR, "process_bytes": PROCESS_BYTES,
           "evaluation_bytes": eval_bytes}
    if dynamic_tables:
        out["ev_tables_planned_bytes"] = dict(dynamic_tables)
        out["tfra_slot_overhead"] = TFRA_SLOT_OVERHEAD
    if parameter_servers:
        out["parameter_servers"] = parameter_servers
        out["tables_per_ps_bytes"] = int((sizes["tables"] + sizes["table_slots"] + dynamic) / parameter_servers)
    return out


def plan_bytes(sizes, dynamic_bytes=0, eval_bytes=0):
    """The planned peak RSS of a training process holding `sizes` (run/graph.variable_bytes), with --ev's
    planned tables and the evaluation's state (evaluation_bytes)."""
    held = sum(v for k, v in sizes.items() if k != "dynamic_tables")
    return int(PROCESS_BYTES + PEAK_FACTOR * held + dynamic_bytes + eval_bytes)


def check(sizes, dynamic_bytes=0, parameter_servers=0, limit=None, source=None, eval_bytes=0):
    """The start-up memory line; raises MemoryPlanError when the plan exceeds the limit. With parameter
    servers, the tables live on them: the line gives each one's share and nothing is refused here."""
    if limit is None:
        limit, source = memory_limit()
    tables = sizes["tables"] + sizes["table_slots"] + dynamic_bytes
    if parameter_servers:
        return (f"memory plan: tables and slots {tables / GB:.2f} GB over {parameter_servers} parameter "
                f"server(s), about {tables / parameter_servers / GB:.2f} GB each (x {PEAK_FACTOR} with the "
                f"checkpoint and evaluation copies); each PS pod's memory limit must hold that")
    planned = plan_bytes(sizes, dynamic_bytes, eval_bytes)
    held = sum(v for k, v in sizes.items() if k != "dynamic_tables") + dynamic_bytes
    line = (f"memory plan: peak about {planned / GB:.2f} GB (variables and slots {held / GB:.2f} GB"
            + (f", of which --ev tables {dynamic_bytes / GB:.2f} GB at their peak, for the ids the schema expects "
               "(expected_ids, else hash_buckets)" if dynamic_bytes else "")
            + (f"; the evaluation's AUC counts {eval_bytes / GB:.2f} GB" if eval_bytes >= 0.01 * GB else "")
            + f"; modelzoo/memory.py) of {limit / GB:.1f} GB ({source})" if limit else
            f"memory plan: peak about {planned / GB:.2f} GB; the memory limit is unknown")
    if limit and planned > limit:
        # (what the tables may take)
        room = WARN_FRACTION * limit - plan_bytes({**sizes, "tables": 0, "table_slots": 0}, 0, eval_bytes)
        if room <= 0:
            raise MemoryPlanError(f"{line}: this run cannot fit, even without its tables; give the process more "
                                  f"memory (a pod's resources.limits.memory)")
        shards = max(2, math.ceil(PEAK_FACTOR * tables / room))
        raise MemoryPlanError(
            f"{line}: this run cannot fit. Remedies: --ev (dynamic tables hold only the ids seen and admitted; "
            f"--ev_filter admits fewer), fewer hash_buckets in the schema (python -m modelzoo.schema infer FILE "
            f"--label COLUMN --max_buckets N), or a parameter-server job with {shards} PS tasks "
            f"(about {tables / shards / GB:.2f} GB of tables and slots each; distribute_k8s/)")
    if limit and planned > WARN_FRACTION * limit:
        line += ": close to the limit"
    return line
