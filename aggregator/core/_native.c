/*
 * The map stage's two hot loops in C: folding a run of one partition's records
 * into the combination buffer (fold_run) and turning one bucket's buffer into a
 * partial's aggregates (add_combos).
 *
 * Both do exactly what the Python code in accumulate.py and combos.py does, in
 * the same order where order shows (float sums, dict insertion), and
 * tests/unit/test_native.py compares the two on generated input.  Anything
 * unusual is left to Python: fold_run stops at a record it does not take as it
 * is (returning its index), and add_combos returns False, having changed
 * nothing, when a value or device is not of the expected type.
 *
 * Encoding a partial for Hazelcast is another loop over every key: aggs_to_wire
 * builds a dimension's keys as Python lists (Partial.to_wire), aggs_to_msgpack
 * writes them as the MessagePack msgspec would make of those lists, returning
 * None for anything it leaves to Python.
 *
 * The API, typed for Python callers, is the Native protocol in native.py: each
 * function takes one small context object (FoldContext, RollUpContext: what
 * stays the same from call to call) and the state it works on, and reads their
 * fields by name.  hatch_build.py builds the module with setuptools' build_ext.
 *
 * No I/O here: the module only computes on the objects it is given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

static PyObject *s_offset, *s_value, *s_timestamp, *s_ts, *s_device;
static PyObject *s_count, *s_vcount, *s_vsum, *s_vmin, *s_vmax, *s_hist, *s_regs;
static PyObject *s_total, *s_by;
/* FoldContext, FoldState and RollUpContext (native.py) */
static PyObject *s_read, *s_fields, *s_unknown, *s_epoch_seconds, *s_oldest, *s_newest;
static PyObject *s_bucket_seconds, *s_max_bytes, *s_limit;
static PyObject *s_partials, *s_buffer, *s_offsets, *s_buffered;
static PyObject *s_agg_type, *s_register_and_rank, *s_zero_bin, *s_min_indexable;
static PyObject *s_inv_log_gamma;

/* Python's float floor division (floatobject.c), so a bucket is int(ts // bs) * bs. */
static double
floor_div(double vx, double wx)
{
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    double floordiv;
    if (mod) {
        if ((wx < 0) != (mod < 0)) {
            div -= 1.0;
        }
    }
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) {
            floordiv += 1.0;
        }
    }
    else {
        floordiv = copysign(0.0, vx / wx);
    }
    return floordiv;
}

/* buckets.py's bucket_of, int(ts // bs) * bs, for bs > 0: 1 with *start set, 0
 * when the bucket is beyond what a long long holds exactly (Python takes those).
 * The only place the C code computes a bucket; test_native.py holds it equal to
 * the Python definition through the module's bucket_of. */
static inline int
bucket_of(double ts, long long bs, long long *start)
{
    double floored = floor_div(ts, (double)bs);
    if (!(fabs(floored) < 9.0e15 / (double)bs)) {
        return 0;
    }
    *start = (long long)floored * bs;
    return 1;
}

static int
get_long_long(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    if (!PyLong_CheckExact(value)) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "expected an int");
        return -1;
    }
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (*out == -1 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

/* obj.name, a new reference, checked to be of type (subtypes allowed) when type
 * is not NULL; NULL with an exception set otherwise. */
static PyObject *
get_attr(PyObject *obj, PyObject *name, PyTypeObject *type)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value != NULL && type != NULL && !PyObject_TypeCheck(value, type)) {
        PyErr_Format(PyExc_TypeError, "%U must be a %s, not %s", name, type->tp_name,
                     Py_TYPE(value)->tp_name);
        Py_CLEAR(value);
    }
    return value;
}

/* obj.name as a double or a long long (any number that converts): 0, or -1 on error. */
static int
get_double(PyObject *obj, PyObject *name, double *out)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    *out = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int
get_number(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* -- reading attributes ----------------------------------------------------- */

/* Records and decoded messages are msgspec Structs, whose fields are member
 * descriptors: a slot at a fixed offset.  A Slot remembers that offset for one
 * exact type, so reading the field is a load; any other object, or an unset
 * field, goes through PyObject_GetAttr. */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset;
} Slot;

static void
resolve_slot(PyTypeObject *type, PyObject *name, Slot *slot)
{
    slot->type = NULL;
    PyObject *descr = _PyType_Lookup(type, name);
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX || member->type == T_OBJECT) {
            slot->type = type;
            slot->offset = member->offset;
        }
    }
}

/* A new reference to obj.name (NULL with an exception set on failure). */
static inline PyObject *
read_slot(PyObject *obj, const Slot *slot, PyObject *name)
{
    if (Py_TYPE(obj) == slot->type) {
        PyObject *value = *(PyObject **)((char *)obj + slot->offset);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(obj, name);
}

/* obj.name as a double: 1, 0 when it is not exactly a float, -1 on error. */
static int
read_float(PyObject *obj, const Slot *slot, PyObject *name, double *out)
{
    PyObject *value = read_slot(obj, slot, name);
    if (value == NULL) {
        return -1;
    }
    int plain = PyFloat_CheckExact(value);
    if (plain) {
        *out = PyFloat_AS_DOUBLE(value);
    }
    Py_DECREF(value);
    return plain;
}

/* -- the cyclic garbage collector ----------------------------------------- */

/* What the fold and the roll-up make per key (the buffer's key tuples and value
 * lists, and each key's Agg) holds only strings, numbers, None and dicts of
 * numbers: it can never be part of a reference cycle.  At a million keys these
 * are most of the heap, and the collector walked each of them again at every
 * young collection it survived (an Agg lives until its partial is stored), for
 * nothing.  CPython itself stops tracking tuples and dicts of atoms the same way;
 * this does it at creation, for the tuples, lists and slotted objects made here.
 * An object is left tracked when anything it refers to is tracked. */
static int
refers_to_tracked(PyObject *item, void *owner_type)
{
    /* A heap type's instances visit their type, which lives as long as they do. */
    return item != (PyObject *)owner_type && PyObject_IS_GC(item) &&
           PyObject_GC_IsTracked(item);
}

static void
untrack_if_atomic(PyObject *obj)
{
    if (!PyObject_GC_IsTracked(obj)) {
        return;
    }
    traverseproc traverse = Py_TYPE(obj)->tp_traverse;
    if (traverse != NULL && traverse(obj, refers_to_tracked, Py_TYPE(obj)) == 0) {
        PyObject_GC_UnTrack(obj);
    }
}

/* -- fold_run ------------------------------------------------------------- */

#define BUCKETS_CACHED 4
#define MAX_DIMS 16

typedef struct {
    long long bucket;
    PyObject *obj;        /* the bucket as a Python int (owned), NULL if unused */
    long long offset;     /* the stored partial's offset, -1 without one */
    PyObject *combos;     /* the buffer's dict for the bucket (borrowed), or NULL */
} CachedBucket;

/* One fold_run call: the FoldContext's and the FoldState's fields (owned
 * references, released by release_fold_args), the run, and the cache. */
typedef struct {
    PyObject *run;      /* list of records of one partition (borrowed from args) */
    PyObject *read;     /* bytes -> decoded message (raises on a bad one) */
    PyObject *fields;   /* tuple: the message's dimension attributes */
    PyObject *unknown;  /* the key of an absent dimension */
    PyObject *seconds;  /* epoch_seconds: a time field that is not a float -> float or None */
    double oldest, newest;
    long long bs, max_bytes;
    PyObject *partials, *buffer, *offsets;
    long long buffered, limit;
    Slot r_offset, r_value, r_timestamp;            /* of the records' type */
    Slot m_ts, m_value, m_device, m_dims[MAX_DIMS];  /* of the decoded type */
    CachedBucket cache[BUCKETS_CACHED];
    int next_victim;
} FoldArgs;

static CachedBucket *
cached_bucket(FoldArgs *a, long long bucket)
{
    for (int i = 0; i < BUCKETS_CACHED; i++) {
        if (a->cache[i].obj != NULL && a->cache[i].bucket == bucket) {
            return &a->cache[i];
        }
    }
    CachedBucket *entry = &a->cache[a->next_victim];
    a->next_victim = (a->next_victim + 1) % BUCKETS_CACHED;
    Py_CLEAR(entry->obj);
    entry->obj = PyLong_FromLongLong(bucket);
    if (entry->obj == NULL) {
        return NULL;
    }
    entry->bucket = bucket;
    entry->offset = -1;
    entry->combos = NULL;
    PyObject *partial = PyDict_GetItemWithError(a->partials, entry->obj);
    if (partial == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (partial != NULL && !Py_IsNone(partial) &&
        get_long_long(partial, s_offset, &entry->offset) < 0) {
        return NULL;
    }
    return entry;
}

/* Fold one record if it is an ordinary message: 1 counted, 2 skipped (already
 * counted), 0 left to Python (nothing changed), -1 error. */
static int
fold_one(FoldArgs *a, PyObject *record)
{
    int result = 0;
    PyObject *offset_obj = NULL, *value = NULL, *raw = NULL;
    PyObject *keys = NULL, *event_value = NULL, *device = NULL;
    Py_ssize_t dims = PyTuple_GET_SIZE(a->fields);

    if (a->r_offset.type == NULL) {
        resolve_slot(Py_TYPE(record), s_offset, &a->r_offset);
        resolve_slot(Py_TYPE(record), s_value, &a->r_value);
        resolve_slot(Py_TYPE(record), s_timestamp, &a->r_timestamp);
    }
    offset_obj = read_slot(record, &a->r_offset, s_offset);
    if (offset_obj == NULL) {
        goto error;
    }
    if (!PyLong_CheckExact(offset_obj)) {
        goto python;
    }
    long long offset = PyLong_AsLongLong(offset_obj);
    if (offset == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto python;
    }
    value = read_slot(record, &a->r_value, s_value);
    if (value == NULL) {
        goto error;
    }
    if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) > a->max_bytes) {
        goto python;
    }
    double arrived = 0.0;
    int got = read_float(record, &a->r_timestamp, s_timestamp, &arrived);
    if (got <= 0) {
        goto judged_elsewhere;
    }
    raw = PyObject_CallOneArg(a->read, value);
    if (raw == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto error; /* KeyboardInterrupt and the like */
        }
        PyErr_Clear(); /* Python decodes it again and judges the error */
        goto python;
    }
    if (a->m_ts.type == NULL) {
        PyTypeObject *type = Py_TYPE(raw);
        resolve_slot(type, s_ts, &a->m_ts);
        resolve_slot(type, s_value, &a->m_value);
        resolve_slot(type, s_device, &a->m_device);
        for (Py_ssize_t d = 0; d < dims; d++) {
            resolve_slot(type, PyTuple_GET_ITEM(a->fields, d), &a->m_dims[d]);
        }
    }
    double t;
    got = read_float(raw, &a->m_ts, s_ts, &t);
    if (got < 0) {
        goto error;
    }
    if (got == 0) { /* an int or a string: epoch_seconds judges it */
        PyObject *field = read_slot(raw, &a->m_ts, s_ts);
        PyObject *converted = field ? PyObject_CallOneArg(a->seconds, field) : NULL;
        Py_XDECREF(field);
        if (converted == NULL) {
            goto error;
        }
        int plain = PyFloat_CheckExact(converted);
        t = plain ? PyFloat_AS_DOUBLE(converted) : 0.0;
        Py_DECREF(converted);
        if (!plain) {
            goto python; /* None: not a time, a rejection */
        }
    }
    if (t < arrived - a->oldest || t > arrived + a->newest) {
        goto python; /* late or early: a drop */
    }
    long long start;
    if (!bucket_of(t, a->bs, &start)) {
        goto python; /* beyond what a long long bucket holds exactly */
    }
    CachedBucket *bucket = cached_bucket(a, start);
    if (bucket == NULL) {
        goto error;
    }
    if (offset <= bucket->offset) {
        result = 2;
        goto done;
    }
    keys = PyTuple_New(dims);
    if (keys == NULL) {
        goto error;
    }
    for (Py_ssize_t d = 0; d < dims; d++) {
        PyObject *name = PyTuple_GET_ITEM(a->fields, d);
        PyObject *key = read_slot(raw, &a->m_dims[d], name);
        if (key == NULL) {
            goto error;
        }
        if (Py_IsNone(key)) {
            Py_DECREF(key);
            key = Py_NewRef(a->unknown);
        }
        PyTuple_SET_ITEM(keys, d, key);
    }
    event_value = read_slot(raw, &a->m_value, s_value);
    if (event_value == NULL) {
        goto error;
    }
    device = read_slot(raw, &a->m_device, s_device);
    if (device == NULL) {
        goto error;
    }
    if (bucket->combos == NULL) {
        bucket->combos = PyDict_GetItemWithError(a->buffer, bucket->obj);
        if (bucket->combos == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            PyObject *fresh = PyDict_New();
            if (fresh == NULL || PyDict_SetItem(a->buffer, bucket->obj, fresh) < 0) {
                Py_XDECREF(fresh);
                goto error;
            }
            Py_DECREF(fresh); /* the buffer holds it */
            bucket->combos = fresh;
        }
    }
    PyObject *combo = PyDict_GetItemWithError(bucket->combos, keys);
    if (combo == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        PyObject *fresh = PyList_New(2);
        if (fresh == NULL) {
            goto error;
        }
        PyList_SET_ITEM(fresh, 0, Py_NewRef(event_value));
        PyList_SET_ITEM(fresh, 1, Py_NewRef(device));
        /* before the insert: a dict tracks itself when it takes a tracked item */
        untrack_if_atomic(keys);
        untrack_if_atomic(fresh);
        int failed = PyDict_SetItem(bucket->combos, keys, fresh);
        Py_DECREF(fresh);
        if (failed < 0) {
            goto error;
        }
    }
    else if (PyList_Append(combo, event_value) < 0 || PyList_Append(combo, device) < 0) {
        goto error;
    }
    if (PyDict_SetItem(a->offsets, bucket->obj, offset_obj) < 0) {
        goto error;
    }
    result = 1;
    goto done;
judged_elsewhere: /* got: 0 for Python to judge, -1 for an error */
    result = got;
    goto done;
python:
    result = 0;
    goto done;
error:
    result = -1;
done:
    Py_XDECREF(offset_obj);
    Py_XDECREF(value);
    Py_XDECREF(raw);
    Py_XDECREF(keys);
    Py_XDECREF(event_value);
    Py_XDECREF(device);
    return result;
}

/* Read fold_run's FoldContext and FoldState into a (zeroed) FoldArgs. */
static int
read_fold_args(FoldArgs *a, PyObject *context, PyObject *state)
{
    if ((a->read = get_attr(context, s_read, NULL)) == NULL ||
        (a->fields = get_attr(context, s_fields, &PyTuple_Type)) == NULL ||
        (a->unknown = get_attr(context, s_unknown, &PyUnicode_Type)) == NULL ||
        (a->seconds = get_attr(context, s_epoch_seconds, NULL)) == NULL ||
        get_double(context, s_oldest, &a->oldest) < 0 ||
        get_double(context, s_newest, &a->newest) < 0 ||
        get_number(context, s_bucket_seconds, &a->bs) < 0 ||
        get_number(context, s_max_bytes, &a->max_bytes) < 0 ||
        get_number(context, s_limit, &a->limit) < 0 ||
        (a->partials = get_attr(state, s_partials, &PyDict_Type)) == NULL ||
        (a->buffer = get_attr(state, s_buffer, &PyDict_Type)) == NULL ||
        (a->offsets = get_attr(state, s_offsets, &PyDict_Type)) == NULL ||
        get_number(state, s_buffered, &a->buffered) < 0) {
        return -1;
    }
    if (a->bs <= 0) {
        PyErr_SetString(PyExc_ValueError, "bucket seconds must be positive");
        return -1;
    }
    if (PyTuple_GET_SIZE(a->fields) > MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "at most %d dimensions", MAX_DIMS);
        return -1;
    }
    return 0;
}

static void
release_fold_args(FoldArgs *a)
{
    for (int i = 0; i < BUCKETS_CACHED; i++) {
        Py_CLEAR(a->cache[i].obj);
    }
    Py_CLEAR(a->read);
    Py_CLEAR(a->fields);
    Py_CLEAR(a->unknown);
    Py_CLEAR(a->seconds);
    Py_CLEAR(a->partials);
    Py_CLEAR(a->buffer);
    Py_CLEAR(a->offsets);
}

static PyObject *
fold_run(PyObject *module, PyObject *args)
{
    FoldArgs a;
    memset(&a, 0, sizeof(a));
    PyObject *context, *state, *result = NULL;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "OOO!n", &context, &state, &PyList_Type, &a.run, &start)) {
        return NULL;
    }
    Py_INCREF(a.run);
    if (read_fold_args(&a, context, state) < 0) {
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(a.run);
    Py_ssize_t index = start < 0 ? 0 : start;
    long long counted = 0, skipped = 0;
    while (index < n && a.buffered < a.limit) {
        PyObject *record = Py_NewRef(PyList_GET_ITEM(a.run, index));
        int outcome = fold_one(&a, record);
        Py_DECREF(record);
        if (outcome < 0) {
            goto done;
        }
        if (outcome == 0) {
            break;
        }
        if (outcome == 1) {
            counted++;
            a.buffered++;
        }
        else {
            skipped++;
        }
        index++;
    }
    PyObject *buffered = PyLong_FromLongLong(a.buffered);
    if (buffered == NULL) {
        goto done;
    }
    int failed = PyObject_SetAttr(state, s_buffered, buffered);
    Py_DECREF(buffered);
    if (failed < 0) {
        goto done;
    }
    result = Py_BuildValue("nLL", index, counted, skipped);
done:
    release_fold_args(&a);
    Py_DECREF(a.run);
    return result;
}

/* -- add_combos ----------------------------------------------------------- */

/* The roll-up counts bins and raises registers per aggregate in C tables first,
 * then writes each (aggregate, bin) and (aggregate, register) it touched into
 * the aggregate's dicts once: a dict operation per distinct pair, not one per
 * event and aggregate. */

typedef struct {
    uint64_t key;
    long long value;
} Entry;

/* Open addressing over an entry array kept in insertion order. */
typedef struct {
    int32_t *slots; /* index into entries, -1 empty */
    Entry *entries;
    size_t mask, count;
} Table;

static int
table_init(Table *t, size_t expected)
{
    size_t cap = 16;
    while (cap < 2 * expected + 1) {
        cap <<= 1;
    }
    t->slots = PyMem_Malloc(cap * sizeof(int32_t));
    t->entries = PyMem_Malloc((expected + 1) * sizeof(Entry));
    t->mask = cap - 1;
    t->count = 0;
    if (t->slots == NULL || t->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(t->slots, 0xff, cap * sizeof(int32_t));
    return 0;
}

static void
table_clear(Table *t)
{
    memset(t->slots, 0xff, (t->mask + 1) * sizeof(int32_t));
    t->count = 0;
}

static void
table_free(Table *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->entries);
}

/* The entry of key, added with value 0 if new (the table never holds more keys
 * than it was sized for). */
static inline Entry *
table_get(Table *t, uint64_t key)
{
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & t->mask;
    for (;;) {
        int32_t at = t->slots[i];
        if (at < 0) {
            t->slots[i] = (int32_t)t->count;
            Entry *entry = &t->entries[t->count++];
            entry->key = key;
            entry->value = 0;
            return entry;
        }
        if (t->entries[at].key == key) {
            return &t->entries[at];
        }
        i = (i + 1) & t->mask;
    }
}

typedef struct {
    PyObject *agg; /* borrowed from the partial */
    PyObject *hist, *regs;
    long long count, vcount;
    double vsum, low, high;
} Group;

#define REGISTER_LIMIT 65536

/* agg.name += amount, taking over the caller's reference to amount (which may be
 * NULL: the caller's allocation failed). */
static int
add_to(PyObject *agg, PyObject *name, PyObject *amount)
{
    if (amount == NULL) {
        return -1;
    }
    PyObject *old = PyObject_GetAttr(agg, name);
    PyObject *sum = old == NULL ? NULL : PyNumber_Add(old, amount);
    Py_XDECREF(old);
    Py_DECREF(amount);
    if (sum == NULL) {
        return -1;
    }
    int failed = PyObject_SetAttr(agg, name, sum);
    Py_DECREF(sum);
    return failed;
}

static int
set_float_if(PyObject *agg, PyObject *name, double candidate, int lower)
{
    PyObject *old = PyObject_GetAttr(agg, name);
    if (old == NULL) {
        return -1;
    }
    double held = PyFloat_AsDouble(old);
    Py_DECREF(old);
    if (held == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (lower ? candidate < held : candidate > held) {
        PyObject *v = PyFloat_FromDouble(candidate);
        if (v == NULL) {
            return -1;
        }
        int failed = PyObject_SetAttr(agg, name, v);
        Py_DECREF(v);
        return failed;
    }
    return 0;
}

/* _add_values's scalar part, and the count (the histogram and registers are
 * written from the tables). */
static int
add_scalars(Group *g)
{
    if (add_to(g->agg, s_count, PyLong_FromLongLong(g->count)) < 0) {
        return -1;
    }
    if (g->vcount == 0) {
        return 0;
    }
    if (add_to(g->agg, s_vcount, PyLong_FromLongLong(g->vcount)) < 0 ||
        add_to(g->agg, s_vsum, PyFloat_FromDouble(g->vsum)) < 0 ||
        set_float_if(g->agg, s_vmin, g->low, 1) < 0) {
        return -1;
    }
    return set_float_if(g->agg, s_vmax, g->high, 0);
}

static int
write_hist(PyObject *hist, PyObject *bin, long long count)
{
    PyObject *seen = PyDict_GetItemWithError(hist, bin);
    if (seen == NULL && PyErr_Occurred()) {
        return -1;
    }
    PyObject *more = PyLong_FromLongLong(count);
    if (more == NULL) {
        return -1;
    }
    if (seen != NULL) {
        PyObject *sum = PyNumber_Add(seen, more);
        Py_DECREF(more);
        if (sum == NULL) {
            return -1;
        }
        more = sum;
    }
    int failed = PyDict_SetItem(hist, bin, more);
    Py_DECREF(more);
    return failed;
}

static int
write_register(PyObject *regs, long reg, long rank)
{
    PyObject *key = PyLong_FromLong(reg);
    if (key == NULL) {
        return -1;
    }
    int failed = 0;
    PyObject *held = PyDict_GetItemWithError(regs, key);
    if (held == NULL && PyErr_Occurred()) {
        failed = -1;
    }
    else {
        long old = held == NULL ? 0 : PyLong_AsLong(held);
        if (old == -1 && PyErr_Occurred()) {
            failed = -1;
        }
        else if (rank > old) {
            PyObject *value = PyLong_FromLong(rank);
            failed = value == NULL ? -1 : PyDict_SetItem(regs, key, value);
            Py_XDECREF(value);
        }
    }
    Py_DECREF(key);
    return failed;
}

/* True when every combo is a list of (float or None, str or None) pairs and every
 * key a tuple of `dims` str: what add_combos takes; anything else goes to Python. */
static int
combos_are_plain(PyObject *combos, Py_ssize_t dims)
{
    Py_ssize_t pos = 0;
    PyObject *keys, *combo;
    while (PyDict_Next(combos, &pos, &keys, &combo)) {
        if (!PyTuple_CheckExact(keys) || PyTuple_GET_SIZE(keys) != dims ||
            !PyList_CheckExact(combo) || PyList_GET_SIZE(combo) % 2) {
            return 0;
        }
        for (Py_ssize_t d = 0; d < dims; d++) {
            if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(keys, d))) {
                return 0;
            }
        }
        Py_ssize_t size = PyList_GET_SIZE(combo);
        for (Py_ssize_t i = 0; i < size; i += 2) {
            PyObject *v = PyList_GET_ITEM(combo, i);
            PyObject *dev = PyList_GET_ITEM(combo, i + 1);
            if (!(Py_IsNone(v) || PyFloat_CheckExact(v)) ||
                !(Py_IsNone(dev) || PyUnicode_CheckExact(dev))) {
                return 0;
            }
        }
    }
    return 1;
}

/* What one pass over the combos learns, shared by the total and each dimension. */
typedef struct {
    Py_ssize_t ncombos, nvalues, ndevices; /* ndevices: distinct */
    Py_ssize_t device_events;              /* events with a device */
    int32_t *value_bin;      /* per value: index into bins */
    int32_t *event_device;   /* per device seen: index into device_reg/rank */
    Py_ssize_t *first_value; /* per combo, ncombos + 1 */
    Py_ssize_t *first_device;
    long long *events, *vcounts;
    double *sums, *lows, *highs;
    PyObject *bins;          /* list: distinct bins as Python ints, first seen first */
    long *device_reg, *device_rank;
} Pass;

static void
pass_free(Pass *p)
{
    PyMem_Free(p->value_bin);
    PyMem_Free(p->event_device);
    PyMem_Free(p->first_value);
    PyMem_Free(p->first_device);
    PyMem_Free(p->events);
    PyMem_Free(p->vcounts);
    PyMem_Free(p->sums);
    PyMem_Free(p->lows);
    PyMem_Free(p->highs);
    PyMem_Free(p->device_reg);
    PyMem_Free(p->device_rank);
    Py_XDECREF(p->bins);
}

/* Each value's bin and each device's register and rank, once; per combo its
 * event count and value statistics (sums added in order from 0.0, as sum()). */
static int
first_pass(PyObject *combos, PyObject *rank_of, long zero_bin, double min_indexable,
           double inv_log_gamma, Pass *p)
{
    PyObject *keys, *combo;
    Py_ssize_t pos = 0, nc = PyDict_GET_SIZE(combos), total = 0;
    while (PyDict_Next(combos, &pos, &keys, &combo)) {
        total += PyList_GET_SIZE(combo) / 2;
    }
    size_t n = (size_t)(total ? total : 1), c1 = (size_t)nc + 1;
    p->ncombos = nc;
    p->value_bin = PyMem_Malloc(n * sizeof(int32_t));
    p->event_device = PyMem_Malloc(n * sizeof(int32_t));
    p->first_value = PyMem_Malloc(c1 * sizeof(Py_ssize_t));
    p->first_device = PyMem_Malloc(c1 * sizeof(Py_ssize_t));
    p->events = PyMem_Malloc(c1 * sizeof(long long));
    p->vcounts = PyMem_Malloc(c1 * sizeof(long long));
    p->sums = PyMem_Malloc(c1 * sizeof(double));
    p->lows = PyMem_Malloc(c1 * sizeof(double));
    p->highs = PyMem_Malloc(c1 * sizeof(double));
    p->device_reg = PyMem_Malloc(n * sizeof(long));
    p->device_rank = PyMem_Malloc(n * sizeof(long));
    p->bins = PyList_New(0);
    if (!p->value_bin || !p->event_device || !p->first_value || !p->first_device ||
        !p->events || !p->vcounts || !p->sums || !p->lows || !p->highs || !p->device_reg ||
        !p->device_rank) {
        PyErr_NoMemory();
        return -1;
    }
    if (p->bins == NULL) {
        return -1;
    }
    Table bin_index = {0};
    if (table_init(&bin_index, n) < 0) {
        table_free(&bin_index);
        return -1;
    }
    PyObject *device_index = PyDict_New();
    int failed = device_index == NULL ? -1 : 0;
    Py_ssize_t v = 0, dv = 0, c = 0;
    pos = 0;
    while (!failed && PyDict_Next(combos, &pos, &keys, &combo)) {
        Py_ssize_t size = PyList_GET_SIZE(combo);
        double sum = 0.0, low = INFINITY, high = -INFINITY;
        long long vcount = 0;
        p->first_value[c] = v;
        p->first_device[c] = dv;
        for (Py_ssize_t i = 0; i < size && !failed; i += 2) {
            PyObject *value = PyList_GET_ITEM(combo, i);
            PyObject *device = PyList_GET_ITEM(combo, i + 1);
            if (!Py_IsNone(value)) {
                double x = PyFloat_AS_DOUBLE(value);
                sum += x;
                if (vcount == 0 || x < low) {
                    low = x;
                }
                if (vcount == 0 || x > high) {
                    high = x;
                }
                vcount++;
                long bin = x < min_indexable ? zero_bin : (long)ceil(log(x) * inv_log_gamma);
                Entry *entry = table_get(&bin_index, (uint64_t)(int64_t)bin);
                if (entry->value == 0) { /* new: remember it as a Python int */
                    PyObject *b = PyLong_FromLong(bin);
                    if (b == NULL || PyList_Append(p->bins, b) < 0) {
                        Py_XDECREF(b);
                        failed = -1;
                        break;
                    }
                    Py_DECREF(b);
                    entry->value = PyList_GET_SIZE(p->bins); /* index + 1 */
                }
                p->value_bin[v++] = (int32_t)(entry->value - 1);
            }
            if (!Py_IsNone(device)) {
                PyObject *known = PyDict_GetItemWithError(device_index, device);
                Py_ssize_t d;
                if (known != NULL) {
                    d = PyLong_AsSsize_t(known);
                }
                else if (PyErr_Occurred()) {
                    failed = -1;
                    break;
                }
                else {
                    d = p->ndevices;
                    PyObject *pair = PyObject_CallOneArg(rank_of, device);
                    if (pair == NULL) {
                        failed = -1;
                        break;
                    }
                    long reg = -1, rank = -1;
                    if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
                        reg = PyLong_AsLong(PyTuple_GET_ITEM(pair, 0));
                        rank = PyLong_AsLong(PyTuple_GET_ITEM(pair, 1));
                    }
                    Py_DECREF(pair);
                    if (PyErr_Occurred()) {
                        failed = -1;
                        break;
                    }
                    if (reg < 0 || reg >= REGISTER_LIMIT || rank < 0) {
                        PyErr_SetString(PyExc_ValueError, "register_and_rank out of range");
                        failed = -1;
                        break;
                    }
                    PyObject *index = PyLong_FromSsize_t(d);
                    if (index == NULL || PyDict_SetItem(device_index, device, index) < 0) {
                        Py_XDECREF(index);
                        failed = -1;
                        break;
                    }
                    Py_DECREF(index);
                    p->device_reg[d] = reg;
                    p->device_rank[d] = rank;
                    p->ndevices++;
                }
                p->event_device[dv++] = (int32_t)d;
            }
        }
        p->sums[c] = sum;
        p->lows[c] = low;
        p->highs[c] = high;
        p->events[c] = size / 2;
        p->vcounts[c] = vcount;
        c++;
    }
    p->first_value[c] = v;
    p->first_device[c] = dv;
    p->nvalues = v;
    p->device_events = dv;
    Py_XDECREF(device_index);
    table_free(&bin_index);
    return failed;
}

/* Count the combos' bins and raise their registers into the groups (group_of[c]
 * is combo c's group), then write every touched pair into the groups' dicts and
 * add their scalars. */
static int
fill_groups(Pass *p, const Py_ssize_t *group_of, Group *groups, Py_ssize_t ngroups,
            Table *bins, Table *regs)
{
    Py_ssize_t nbins = PyList_GET_SIZE(p->bins);
    table_clear(bins);
    table_clear(regs);
    for (Py_ssize_t c = 0; c < p->ncombos; c++) {
        uint64_t g = (uint64_t)group_of[c];
        Group *group = &groups[g];
        group->count += p->events[c];
        if (p->vcounts[c]) {
            if (group->vcount == 0 || p->lows[c] < group->low) {
                group->low = p->lows[c];
            }
            if (group->vcount == 0 || p->highs[c] > group->high) {
                group->high = p->highs[c];
            }
            group->vcount += p->vcounts[c];
            group->vsum += p->sums[c];
        }
        for (Py_ssize_t v = p->first_value[c]; v < p->first_value[c + 1]; v++) {
            table_get(bins, g * (uint64_t)nbins + (uint64_t)p->value_bin[v])->value++;
        }
        for (Py_ssize_t d = p->first_device[c]; d < p->first_device[c + 1]; d++) {
            int32_t device = p->event_device[d];
            Entry *entry = table_get(regs, g * REGISTER_LIMIT + (uint64_t)p->device_reg[device]);
            if (p->device_rank[device] > entry->value) {
                entry->value = p->device_rank[device];
            }
        }
    }
    for (size_t i = 0; i < bins->count; i++) {
        Entry *entry = &bins->entries[i];
        Group *group = &groups[entry->key / (uint64_t)nbins];
        PyObject *bin = PyList_GET_ITEM(p->bins, (Py_ssize_t)(entry->key % (uint64_t)nbins));
        if (write_hist(group->hist, bin, entry->value) < 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < regs->count; i++) {
        Entry *entry = &regs->entries[i];
        Group *group = &groups[entry->key / REGISTER_LIMIT];
        if (write_register(group->regs, (long)(entry->key % REGISTER_LIMIT),
                           (long)entry->value) < 0) {
            return -1;
        }
    }
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        if (add_scalars(&groups[g]) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
group_init(Group *group, PyObject *agg)
{
    group->agg = agg;
    group->count = group->vcount = 0;
    group->vsum = 0.0;
    group->low = INFINITY;
    group->high = -INFINITY;
    group->hist = PyObject_GetAttr(agg, s_hist);
    group->regs = group->hist ? PyObject_GetAttr(agg, s_regs) : NULL;
    if (group->regs == NULL) {
        return -1;
    }
    if (!PyDict_CheckExact(group->hist) || !PyDict_CheckExact(group->regs)) {
        PyErr_SetString(PyExc_TypeError, "an Agg's hist and regs must be dicts");
        return -1;
    }
    return 0;
}

static PyObject *
roll_up(PyObject *partial, PyObject *combos, PyObject *agg_type, PyObject *rank_of,
        long zero_bin, double min_indexable, double inv_log_gamma)
{
    PyObject *result = NULL, *by = NULL, *total = NULL, *group_index = NULL;
    Pass p;
    memset(&p, 0, sizeof(p));
    Table bins = {0}, regs = {0};
    Group *groups = NULL;
    Py_ssize_t *group_of = NULL, ngroups = 0;

    by = PyObject_GetAttr(partial, s_by);
    if (by == NULL) {
        goto done;
    }
    if (!PyTuple_CheckExact(by)) {
        PyErr_SetString(PyExc_TypeError, "Partial.by must be a tuple");
        goto done;
    }
    Py_ssize_t dims = PyTuple_GET_SIZE(by);
    if (!combos_are_plain(combos, dims)) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    total = PyObject_GetAttr(partial, s_total);
    if (total == NULL) {
        goto done;
    }
    if (first_pass(combos, rank_of, zero_bin, min_indexable, inv_log_gamma, &p) < 0) {
        goto done;
    }
    size_t nc = (size_t)(p.ncombos ? p.ncombos : 1);
    groups = PyMem_Calloc(nc, sizeof(Group));
    group_of = PyMem_Calloc(nc, sizeof(Py_ssize_t));
    if (groups == NULL || group_of == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (table_init(&bins, (size_t)p.nvalues) < 0 ||
        table_init(&regs, (size_t)p.device_events) < 0) {
        goto done;
    }

    /* The total: every combo in group 0. */
    ngroups = 1;
    if (group_init(&groups[0], total) < 0) {
        goto release;
    }
    if (fill_groups(&p, group_of, groups, 1, &bins, &regs) < 0) {
        goto release;
    }
    /* Each dimension: combos grouped by their key there; an aggregate is created
     * at its key's first combo, the order Python creates them in. */
    for (Py_ssize_t d = 0; d < dims; d++) {
        for (Py_ssize_t g = 0; g < ngroups; g++) {
            Py_CLEAR(groups[g].hist);
            Py_CLEAR(groups[g].regs);
        }
        ngroups = 0;
        PyObject *dim_keys = PyTuple_GET_ITEM(by, d);
        if (!PyDict_CheckExact(dim_keys)) {
            PyErr_SetString(PyExc_TypeError, "Partial.by must hold dicts");
            goto release;
        }
        Py_XSETREF(group_index, PyDict_New());
        if (group_index == NULL) {
            goto release;
        }
        Py_ssize_t pos = 0, c = 0;
        PyObject *keys, *combo;
        while (PyDict_Next(combos, &pos, &keys, &combo)) {
            PyObject *key = PyTuple_GET_ITEM(keys, d);
            PyObject *found = PyDict_GetItemWithError(group_index, key);
            if (found != NULL) {
                group_of[c++] = PyLong_AsSsize_t(found);
                continue;
            }
            if (PyErr_Occurred()) {
                goto release;
            }
            PyObject *agg = PyDict_GetItemWithError(dim_keys, key);
            if (agg == NULL) {
                if (PyErr_Occurred()) {
                    goto release;
                }
                agg = PyObject_CallNoArgs(agg_type);
                if (agg == NULL) {
                    goto release;
                }
                untrack_if_atomic(agg);
                int bad = PyDict_SetItem(dim_keys, key, agg);
                Py_DECREF(agg); /* dim_keys holds it */
                if (bad < 0) {
                    goto release;
                }
            }
            PyObject *index = PyLong_FromSsize_t(ngroups);
            if (index == NULL) {
                goto release;
            }
            int bad = PyDict_SetItem(group_index, key, index);
            Py_DECREF(index);
            if (bad < 0 || group_init(&groups[ngroups], agg) < 0) {
                ngroups++; /* so its references are released */
                goto release;
            }
            group_of[c++] = ngroups++;
        }
        if (fill_groups(&p, group_of, groups, ngroups, &bins, &regs) < 0) {
            goto release;
        }
    }
    result = Py_NewRef(Py_True);
release:
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        Py_XDECREF(groups[g].hist);
        Py_XDECREF(groups[g].regs);
    }
done:
    table_free(&bins);
    table_free(&regs);
    PyMem_Free(groups);
    PyMem_Free(group_of);
    pass_free(&p);
    Py_XDECREF(group_index);
    Py_XDECREF(total);
    Py_XDECREF(by);
    return result;
}

/* add_combos(context, partial, combos): the RollUpContext's fields, then roll_up. */
static PyObject *
add_combos(PyObject *module, PyObject *args)
{
    PyObject *context, *partial, *combos, *result = NULL;
    if (!PyArg_ParseTuple(args, "OOO!", &context, &partial, &PyDict_Type, &combos)) {
        return NULL;
    }
    PyObject *agg_type = get_attr(context, s_agg_type, &PyType_Type);
    PyObject *rank_of = agg_type ? get_attr(context, s_register_and_rank, NULL) : NULL;
    long long zero_bin;
    double min_indexable, inv_log_gamma;
    if (rank_of != NULL && get_number(context, s_zero_bin, &zero_bin) == 0 &&
        get_double(context, s_min_indexable, &min_indexable) == 0 &&
        get_double(context, s_inv_log_gamma, &inv_log_gamma) == 0) {
        result = roll_up(partial, combos, agg_type, rank_of, (long)zero_bin, min_indexable,
                         inv_log_gamma);
    }
    Py_XDECREF(agg_type);
    Py_XDECREF(rank_of);
    return result;
}

static PyObject *
py_bucket_of(PyObject *module, PyObject *args)
{
    double ts;
    long long bs, start;
    if (!PyArg_ParseTuple(args, "dL", &ts, &bs)) {
        return NULL;
    }
    if (bs <= 0) {
        PyErr_SetString(PyExc_ValueError, "bucket seconds must be positive");
        return NULL;
    }
    if (!bucket_of(ts, bs, &start)) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(start);
}

/* add_counts(totals, counts, sign, bar, risen): key_counts.add_counts_python in C (the
   reducer's per-key loop; tests/unit/test_key_counts.py holds the two equal).  totals[key]
   += sign * counts[key], a total that reaches zero deleted; with sign 1 and bar a
   (count, key) tuple, each key whose total now ranks at or above the bar (a higher count,
   or the same count and a key that sorts no later) is added to the set risen. */
static PyObject *
add_counts(PyObject *module, PyObject *args)
{
    PyObject *totals, *counts, *bar, *risen;
    int sign;
    if (!PyArg_ParseTuple(args, "O!O!iOO!", &PyDict_Type, &totals, &PyDict_Type, &counts, &sign,
                          &bar, &PySet_Type, &risen)) {
        return NULL;
    }
    if (sign != 1 && sign != -1) {
        PyErr_SetString(PyExc_ValueError, "sign must be 1 or -1");
        return NULL;
    }
    if (totals == counts) {
        PyErr_SetString(PyExc_ValueError, "cannot add counts into themselves");
        return NULL;
    }
    PyObject *bar_count = NULL, *bar_key = NULL;
    if (bar != Py_None) {
        if (!PyTuple_Check(bar) || PyTuple_GET_SIZE(bar) != 2) {
            PyErr_SetString(PyExc_TypeError, "bar must be None or a (count, key) tuple");
            return NULL;
        }
        bar_count = PyTuple_GET_ITEM(bar, 0);
        bar_key = PyTuple_GET_ITEM(bar, 1);
    }
    int note = sign > 0 && bar_count != NULL;
    Py_INCREF(counts); /* the loop calls back into Python (comparisons): keep it alive */
    Py_ssize_t pos = 0;
    PyObject *key, *count;
    while (PyDict_Next(counts, &pos, &key, &count)) {
        Py_INCREF(key);
        Py_INCREF(count);
        PyObject *old = PyDict_GetItemWithError(totals, key); /* borrowed */
        PyObject *total = NULL;
        if (old != NULL) {
            total = sign > 0 ? PyNumber_Add(old, count) : PyNumber_Subtract(old, count);
        } else if (!PyErr_Occurred()) {
            if (sign > 0) {
                Py_INCREF(count);
                total = count;
            } else {
                total = PyNumber_Negative(count);
            }
        }
        int ok = total != NULL;
        int nonzero = ok ? PyObject_IsTrue(total) : -1;
        if (nonzero > 0) {
            ok = PyDict_SetItem(totals, key, total) == 0;
            if (ok && note) {
                int above = PyObject_RichCompareBool(total, bar_count, Py_GT);
                if (above == 0 && (above = PyObject_RichCompareBool(total, bar_count, Py_EQ)) > 0) {
                    above = PyObject_RichCompareBool(key, bar_key, Py_LE);
                }
                ok = above >= 0 && (above == 0 || PySet_Add(risen, key) == 0);
            }
        } else if (nonzero == 0) {
            ok = old == NULL || PyDict_DelItem(totals, key) == 0;
        } else {
            ok = 0;
        }
        Py_XDECREF(total);
        Py_DECREF(key);
        Py_DECREF(count);
        if (!ok) {
            Py_DECREF(counts);
            return NULL;
        }
    }
    Py_DECREF(counts);
    Py_RETURN_NONE;
}

/* take_counts(totals, counts, limit): key_counts.take_counts_python in C.  Moves up to
   limit keys out of counts, taking each one's count away from totals (a total that
   reaches zero deleted); returns how many it moved. */
static PyObject *
take_counts(PyObject *module, PyObject *args)
{
    PyObject *totals, *counts;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyDict_Type, &totals, &PyDict_Type, &counts, &limit)) {
        return NULL;
    }
    if (totals == counts) {
        PyErr_SetString(PyExc_ValueError, "cannot take counts from themselves");
        return NULL;
    }
    Py_ssize_t size = PyDict_GET_SIZE(counts);
    Py_ssize_t want = limit < size ? limit : size;
    if (want <= 0) {
        return PyLong_FromLong(0);
    }
    PyObject *keys = PyList_New(want);
    if (keys == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0, taken = 0;
    PyObject *key, *count;
    while (taken < want && PyDict_Next(counts, &pos, &key, &count)) {
        Py_INCREF(key);
        PyList_SET_ITEM(keys, taken, key);
        taken++;
    }
    for (Py_ssize_t i = 0; i < taken; i++) {
        key = PyList_GET_ITEM(keys, i);
        count = PyDict_GetItemWithError(counts, key); /* borrowed */
        if (count == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "counts changed while taken");
            }
            Py_DECREF(keys);
            return NULL;
        }
        Py_INCREF(count);
        PyObject *old = PyDict_GetItemWithError(totals, key); /* borrowed */
        PyObject *total = NULL;
        if (old != NULL) {
            total = PyNumber_Subtract(old, count);
        } else if (!PyErr_Occurred()) {
            total = PyNumber_Negative(count);
        }
        int nonzero = total != NULL ? PyObject_IsTrue(total) : -1;
        int ok = nonzero > 0   ? PyDict_SetItem(totals, key, total) == 0
                 : nonzero == 0 ? old == NULL || PyDict_DelItem(totals, key) == 0
                                : 0;
        ok = ok && PyDict_DelItem(counts, key) == 0;
        Py_XDECREF(total);
        Py_DECREF(count);
        if (!ok) {
            Py_DECREF(keys);
            return NULL;
        }
    }
    Py_DECREF(keys);
    return PyLong_FromSsize_t(taken);
}

/* [k0, v0, k1, v1, ...] of a dict (partial._flatten). */
static PyObject *
flat_pairs(PyObject *mapping)
{
    if (!PyDict_Check(mapping)) {
        PyErr_SetString(PyExc_TypeError, "an Agg's hist and regs must be dicts");
        return NULL;
    }
    PyObject *flat = PyList_New(2 * PyDict_GET_SIZE(mapping));
    if (flat == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0, at = 0;
    PyObject *key, *value;
    while (PyDict_Next(mapping, &pos, &key, &value)) {
        Py_INCREF(key);
        PyList_SET_ITEM(flat, at++, key);
        Py_INCREF(value);
        PyList_SET_ITEM(flat, at++, value);
    }
    return flat;
}

/* Agg.to_wire_python in C: [count, vcount, vsum, vmin|None, vmax|None, hist, regs]. */
static PyObject *
agg_wire(PyObject *agg)
{
    PyObject *names[7] = {s_count, s_vcount, s_vsum, s_vmin, s_vmax, s_hist, s_regs};
    PyObject *fields[7] = {NULL};
    PyObject *wire = NULL;
    for (int i = 0; i < 7; i++) {
        if ((fields[i] = PyObject_GetAttr(agg, names[i])) == NULL) {
            goto done;
        }
    }
    int has_values = PyObject_IsTrue(fields[1]);
    if (has_values < 0 || (wire = PyList_New(7)) == NULL) {
        goto done;
    }
    for (int i = 0; i < 5; i++) {
        PyObject *item = (i == 3 || i == 4) && !has_values ? Py_None : fields[i];
        Py_INCREF(item);
        PyList_SET_ITEM(wire, i, item);
    }
    for (int i = 5; i < 7; i++) {
        PyObject *flat = flat_pairs(fields[i]);
        if (flat == NULL) {
            Py_CLEAR(wire);
            goto done;
        }
        PyList_SET_ITEM(wire, i, flat);
    }
done:
    for (int i = 0; i < 7; i++) {
        Py_XDECREF(fields[i]);
    }
    return wire;
}

/* aggs_to_wire(aggs): {key: agg.to_wire()} for a dict of Aggs (partial.aggs_to_wire_python). */
static PyObject *
aggs_to_wire(PyObject *module, PyObject *aggs)
{
    if (!PyDict_Check(aggs)) {
        PyErr_SetString(PyExc_TypeError, "aggs_to_wire takes a dict of Aggs");
        return NULL;
    }
    PyObject *wires = _PyDict_NewPresized(PyDict_GET_SIZE(aggs));
    if (wires == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *agg;
    while (PyDict_Next(aggs, &pos, &key, &agg)) {
        Py_INCREF(agg); /* attribute reads may run Python code */
        PyObject *wire = agg_wire(agg);
        Py_DECREF(agg);
        if (wire == NULL || PyDict_SetItem(wires, key, wire) < 0) {
            Py_XDECREF(wire);
            Py_DECREF(wires);
            return NULL;
        }
        Py_DECREF(wire);
    }
    return wires;
}

/* -- aggs_to_msgpack ------------------------------------------------------- */

/* Every flush encodes every key of a partial: at one app per event, a million
 * Aggs.  aggs_to_wire makes three lists per key that msgspec walks once and
 * drops; this writes the MessagePack msgspec writes for aggs_to_wire(aggs)
 * straight from the Aggs' slots, into one bytes object that the Hazelcast codec
 * hands to msgspec as a Raw (copied as it is).  Byte for byte msgspec's choices:
 * the shortest header for each int, string, map and array, the unsigned forms
 * for an int >= 0, float64 for every float; tests/unit/test_partial_wire.py
 * compares the two on generated input.
 *
 * Anything msgspec would write otherwise or refuse -- an int beyond 64 bits, a
 * key that is not exactly a str or not UTF-8, a value that is not exactly the Agg
 * type, a field of another type, an unset field -- makes the call return None,
 * and Python encodes that dict as before (raising what it raised before).
 *
 * The loop runs no Python code (no attribute lookup, no comparison, no
 * allocation of a tracked object, so no collection either), so nothing can
 * change the dict or the Aggs under it: it reads them through borrowed
 * references. */

#define AGG_FIELDS 7

/* The Agg type's slots, in Agg.to_wire's order. */
typedef struct {
    Slot count, vcount, vsum, vmin, vmax, hist, regs;
} AggSlots;

/* 1 when every field of agg_type is a slot at a fixed offset, 0 otherwise. */
static int
resolve_agg_slots(PyTypeObject *agg_type, AggSlots *s)
{
    resolve_slot(agg_type, s_count, &s->count);
    resolve_slot(agg_type, s_vcount, &s->vcount);
    resolve_slot(agg_type, s_vsum, &s->vsum);
    resolve_slot(agg_type, s_vmin, &s->vmin);
    resolve_slot(agg_type, s_vmax, &s->vmax);
    resolve_slot(agg_type, s_hist, &s->hist);
    resolve_slot(agg_type, s_regs, &s->regs);
    return s->count.type && s->vcount.type && s->vsum.type && s->vmin.type &&
           s->vmax.type && s->hist.type && s->regs.type;
}

/* A borrowed reference to the slot's value in obj (of the slot's type), NULL
 * when the field is unset (no exception set). */
static inline PyObject *
peek_slot(PyObject *obj, const Slot *slot)
{
    return *(PyObject **)((char *)obj + slot->offset);
}

typedef struct {
    PyObject *bytes; /* the output, doubled as it fills, cut to size at the end */
    Py_ssize_t used;
} Packer;

/* Room for `more` bytes past what is written: 0, or -1 with an exception set
 * (the bytes are then released and p->bytes is NULL). */
static int
reserve(Packer *p, Py_ssize_t more)
{
    Py_ssize_t size = PyBytes_GET_SIZE(p->bytes);
    if (more <= size - p->used) {
        return 0;
    }
    if (more > PY_SSIZE_T_MAX - p->used) {
        Py_CLEAR(p->bytes);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t want = size;
    while (want - p->used < more) {
        want = want > PY_SSIZE_T_MAX / 2 ? PY_SSIZE_T_MAX : 2 * want;
    }
    return _PyBytes_Resize(&p->bytes, want);
}

/* The writers below assume the room was reserved. */
static inline void
put_byte(Packer *p, unsigned char byte)
{
    ((unsigned char *)PyBytes_AS_STRING(p->bytes))[p->used++] = byte;
}

/* tag, then the low `width` bytes of value, big-endian (MessagePack's order). */
static inline void
put_tagged(Packer *p, unsigned char tag, uint64_t value, int width)
{
    unsigned char *at = (unsigned char *)PyBytes_AS_STRING(p->bytes) + p->used;
    at[0] = tag;
    for (int i = width; i > 0; i--) {
        at[i] = (unsigned char)value;
        value >>= 8;
    }
    p->used += 1 + width;
}

/* The most bytes put_number writes (a tag and 8 bytes), and a length header. */
#define NUMBER_MAX 9
#define LENGTH_MAX 5

static void
put_unsigned(Packer *p, uint64_t u)
{
    if (u < 0x80) {
        put_byte(p, (unsigned char)u); /* positive fixint */
    }
    else if (u <= 0xff) {
        put_tagged(p, 0xcc, u, 1);
    }
    else if (u <= 0xffff) {
        put_tagged(p, 0xcd, u, 2);
    }
    else if (u <= 0xffffffffu) {
        put_tagged(p, 0xce, u, 4);
    }
    else {
        put_tagged(p, 0xcf, u, 8);
    }
}

/* x < 0: the smallest signed form (two's complement, as msgspec). */
static void
put_negative(Packer *p, int64_t x)
{
    if (x >= -32) {
        put_byte(p, (unsigned char)x); /* negative fixint, 0xe0..0xff */
    }
    else if (x >= INT8_MIN) {
        put_tagged(p, 0xd0, (uint64_t)x, 1);
    }
    else if (x >= INT16_MIN) {
        put_tagged(p, 0xd1, (uint64_t)x, 2);
    }
    else if (x >= INT32_MIN) {
        put_tagged(p, 0xd2, (uint64_t)x, 4);
    }
    else {
        put_tagged(p, 0xd3, (uint64_t)x, 8);
    }
}

/* An exact int: 1 written, 0 not (another type, or beyond what msgspec writes:
 * below -2**63 or above 2**64 - 1), -1 on error. */
static int
put_int(Packer *p, PyObject *obj)
{
    if (!PyLong_CheckExact(obj)) {
        return 0;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0) {
        return 0;
    }
    if (overflow == 0) {
        if (x < 0) {
            put_negative(p, (int64_t)x);
        }
        else {
            put_unsigned(p, (uint64_t)x);
        }
        return 1;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(obj);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear(); /* beyond 2**64 - 1: msgspec refuses it, Python says so */
        return 0;
    }
    put_unsigned(p, (uint64_t)u);
    return 1;
}

/* An exact float (always float64, as msgspec) or int: 1, 0 for another type, -1. */
static int
put_number(Packer *p, PyObject *obj)
{
    if (PyFloat_CheckExact(obj)) {
        double x = PyFloat_AS_DOUBLE(obj);
        uint64_t bits;
        memcpy(&bits, &x, sizeof(bits));
        put_tagged(p, 0xcb, bits, 8);
        return 1;
    }
    return put_int(p, obj);
}

/* A map, array or string length: the fix form below fix_limit (its tag or'ed
 * with the length), then the 8-bit form where the kind has one (tag8 not 0),
 * the 16-bit and the 32-bit.  0 for a length beyond 32 bits (msgspec refuses it). */
static int
put_length(Packer *p, Py_ssize_t n, unsigned char fix, Py_ssize_t fix_limit,
           unsigned char tag8, unsigned char tag16, unsigned char tag32)
{
    if (n < fix_limit) {
        put_byte(p, (unsigned char)(fix | n));
    }
    else if (tag8 && n <= 0xff) {
        put_tagged(p, tag8, (uint64_t)n, 1);
    }
    else if (n <= 0xffff) {
        put_tagged(p, tag16, (uint64_t)n, 2);
    }
    else if ((uint64_t)n <= 0xffffffffu) {
        put_tagged(p, tag32, (uint64_t)n, 4);
    }
    else {
        return 0;
    }
    return 1;
}

#define put_map_length(p, n) put_length((p), (n), 0x80, 16, 0, 0xde, 0xdf)
#define put_array_length(p, n) put_length((p), (n), 0x90, 16, 0, 0xdc, 0xdd)
#define put_str_length(p, n) put_length((p), (n), 0xa0, 32, 0xd9, 0xda, 0xdb)

/* An exact str as UTF-8: 1, 0 for another type or a str UTF-8 cannot encode (a
 * lone surrogate), -1 on error. */
static int
put_str(Packer *p, PyObject *obj)
{
    if (!PyUnicode_CheckExact(obj)) {
        return 0;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &size);
    if (utf8 == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    if (reserve(p, LENGTH_MAX + size) < 0) {
        return -1;
    }
    if (!put_str_length(p, size)) {
        return 0;
    }
    memcpy(PyBytes_AS_STRING(p->bytes) + p->used, utf8, (size_t)size);
    p->used += size;
    return 1;
}

/* _flatten(mapping) for an exact dict of exact ints: [k0, v0, k1, v1, ...]. */
static int
put_flat_pairs(Packer *p, PyObject *mapping)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int put = put_array_length(p, 2 * PyDict_GET_SIZE(mapping));
    while (put > 0 && PyDict_Next(mapping, &pos, &key, &value)) {
        put = put_int(p, key);
        if (put > 0) {
            put = put_int(p, value);
        }
    }
    return put;
}

/* Agg.to_wire(agg) for an agg of exactly the type the slots were resolved for:
 * [count, vcount, vsum, vmin|None, vmax|None, flat hist, flat regs].  1, 0 for a
 * field it leaves to Python, -1 on error. */
static int
put_agg(Packer *p, PyObject *agg, const AggSlots *s)
{
    PyObject *count = peek_slot(agg, &s->count), *vcount = peek_slot(agg, &s->vcount);
    PyObject *vsum = peek_slot(agg, &s->vsum);
    PyObject *hist = peek_slot(agg, &s->hist), *regs = peek_slot(agg, &s->regs);
    if (!count || !vcount || !vsum || !hist || !regs || !PyDict_CheckExact(hist) ||
        !PyDict_CheckExact(regs)) {
        return 0;
    }
    /* Exact ints and floats have a truth value without calling Python code. */
    if (!PyLong_CheckExact(vcount) && !PyFloat_CheckExact(vcount)) {
        return 0;
    }
    int has_values = PyObject_IsTrue(vcount);
    PyObject *vmin = has_values ? peek_slot(agg, &s->vmin) : Py_None;
    PyObject *vmax = has_values ? peek_slot(agg, &s->vmax) : Py_None;
    if (!vmin || !vmax) {
        return 0;
    }
    /* The most this Agg can take, reserved once: its array, five numbers, two
     * array headers and two numbers per pair. */
    Py_ssize_t pairs = PyDict_GET_SIZE(hist) + PyDict_GET_SIZE(regs);
    if (pairs > PY_SSIZE_T_MAX / (4 * NUMBER_MAX)) {
        return 0;
    }
    if (reserve(p, 1 + 5 * NUMBER_MAX + 2 * LENGTH_MAX + 2 * NUMBER_MAX * pairs) < 0) {
        return -1;
    }
    put_byte(p, 0x90 | AGG_FIELDS);
    PyObject *scalars[5] = {count, vcount, vsum, vmin, vmax};
    for (int i = 0; i < 5; i++) {
        if (Py_IsNone(scalars[i])) {
            put_byte(p, 0xc0);
            continue;
        }
        int put = put_number(p, scalars[i]);
        if (put <= 0) {
            return put;
        }
    }
    int put = put_flat_pairs(p, hist);
    return put > 0 ? put_flat_pairs(p, regs) : put;
}

/* aggs_to_msgpack(agg_type, aggs): the MessagePack of aggs_to_wire(aggs) as
 * msgspec writes it, or None where Python must encode it. */
static PyObject *
aggs_to_msgpack(PyObject *module, PyObject *args)
{
    PyTypeObject *agg_type;
    PyObject *aggs;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &agg_type, &PyDict_Type, &aggs)) {
        return NULL;
    }
    AggSlots slots = {0}; /* zeroed: gcc cannot see that unresolved slots return early */
    if (!PyDict_CheckExact(aggs) || !resolve_agg_slots(agg_type, &slots)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyDict_GET_SIZE(aggs);
    /* About what a key with a short name and one value takes; more is grown into,
     * and what is left over given back at the end. */
    Py_ssize_t guess = LENGTH_MAX + 64 * Py_MIN(n, PY_SSIZE_T_MAX / 128);
    Packer p = {PyBytes_FromStringAndSize(NULL, guess), 0};
    if (p.bytes == NULL) {
        return NULL;
    }
    int put = put_map_length(&p, n);
    Py_ssize_t pos = 0;
    PyObject *key, *agg;
    while (put > 0 && PyDict_Next(aggs, &pos, &key, &agg)) {
        put = put_str(&p, key);
        if (put > 0) {
            put = Py_TYPE(agg) == agg_type ? put_agg(&p, agg, &slots) : 0;
        }
    }
    if (put < 0) {
        Py_XDECREF(p.bytes);
        return NULL;
    }
    if (put == 0) {
        Py_DECREF(p.bytes);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&p.bytes, p.used) < 0) {
        return NULL;
    }
    return p.bytes;
}

static PyMethodDef methods[] = {
    {"bucket_of", py_bucket_of, METH_VARARGS,
     "bucket_of(ts, bucket_seconds) -> int | None: the bucket fold_run files ts under, "
     "None where it leaves ts to Python (beyond a long long)."},
    {"fold_run", fold_run, METH_VARARGS,
     "fold_run(context, state, run, start) -> (index, counted, skipped): fold run[start:] "
     "into state (a FoldState; its buffered count is updated) until a record Python must "
     "judge, or the buffer is full."},
    {"add_combos", add_combos, METH_VARARGS,
     "add_combos(context, partial, combos) -> bool: combos.add_combos in C; False (nothing "
     "changed) for input it leaves to Python."},
    {"add_counts", add_counts, METH_VARARGS,
     "add_counts(totals, counts, sign, bar, risen) -> None: key_counts.add_counts_python in "
     "C (the reducer's per-key counts)."},
    {"take_counts", take_counts, METH_VARARGS,
     "take_counts(totals, counts, limit) -> int: key_counts.take_counts_python in C (moves "
     "up to limit keys out of counts, taking their counts away from totals)."},
    {"aggs_to_wire", aggs_to_wire, METH_O,
     "aggs_to_wire(aggs) -> dict: partial.aggs_to_wire_python in C ({key: agg.to_wire()})."},
    {"aggs_to_msgpack", aggs_to_msgpack, METH_VARARGS,
     "aggs_to_msgpack(agg_type, aggs) -> bytes | None: the MessagePack msgspec writes for "
     "aggs_to_wire(aggs), or None for input it leaves to Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "aggregator.core._native",
    "The map stage's fold, roll-up and partial encoding loops and the reducer's per-key "
    "counts in C (see accumulate.py, combos.py, partial.py and key_counts.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_offset, "offset"}, {&s_value, "value"}, {&s_timestamp, "timestamp"},
        {&s_ts, "ts"}, {&s_device, "device"}, {&s_count, "count"},
        {&s_vcount, "vcount"}, {&s_vsum, "vsum"}, {&s_vmin, "vmin"},
        {&s_vmax, "vmax"}, {&s_hist, "hist"}, {&s_regs, "regs"},
        {&s_total, "total"}, {&s_by, "by"},
        {&s_read, "read"}, {&s_fields, "fields"}, {&s_unknown, "unknown"},
        {&s_epoch_seconds, "epoch_seconds"}, {&s_oldest, "oldest"}, {&s_newest, "newest"},
        {&s_bucket_seconds, "bucket_seconds"}, {&s_max_bytes, "max_bytes"},
        {&s_limit, "limit"}, {&s_partials, "partials"}, {&s_buffer, "buffer"},
        {&s_offsets, "offsets"}, {&s_buffered, "buffered"}, {&s_agg_type, "agg_type"},
        {&s_register_and_rank, "register_and_rank"}, {&s_zero_bin, "zero_bin"},
        {&s_min_indexable, "min_indexable"}, {&s_inv_log_gamma, "inv_log_gamma"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (*names[i].slot == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
