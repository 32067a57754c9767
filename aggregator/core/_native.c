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
 * No I/O here: the module only computes on the objects it is given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>
#include <structmember.h>

static PyObject *s_offset, *s_value, *s_timestamp, *s_ts, *s_device;
static PyObject *s_count, *s_vcount, *s_vsum, *s_vmin, *s_vmax, *s_hist, *s_regs;
static PyObject *s_total, *s_by;
static PyObject *one;

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

/* -- fold_run ------------------------------------------------------------- */

#define BUCKETS_CACHED 4
#define MAX_DIMS 16

typedef struct {
    long long bucket;
    PyObject *obj;        /* the bucket as a Python int (owned), NULL if unused */
    long long offset;     /* the stored partial's offset, -1 without one */
    PyObject *combos;     /* the buffer's dict for the bucket (borrowed), or NULL */
} CachedBucket;

typedef struct {
    PyObject *run;      /* list of records of one partition */
    PyObject *read;     /* bytes -> decoded message (raises on a bad one) */
    PyObject *fields;   /* tuple: the message's dimension attributes */
    PyObject *unknown;  /* the key of an absent dimension */
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
    PyObject *offset_obj = NULL, *value = NULL, *stamp = NULL, *raw = NULL, *ts = NULL;
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
    stamp = read_slot(record, &a->r_timestamp, s_timestamp);
    if (stamp == NULL) {
        goto error;
    }
    if (!PyFloat_CheckExact(stamp)) {
        goto python;
    }
    double arrived = PyFloat_AS_DOUBLE(stamp);
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
    ts = read_slot(raw, &a->m_ts, s_ts);
    if (ts == NULL) {
        goto error;
    }
    if (!PyFloat_CheckExact(ts)) {
        goto python;
    }
    double t = PyFloat_AS_DOUBLE(ts);
    if (t < arrived - a->oldest || t > arrived + a->newest) {
        goto python; /* late or early: a drop */
    }
    double floored = floor_div(t, (double)a->bs);
    if (!(fabs(floored) < 9.0e15 / (double)a->bs)) {
        goto python; /* beyond what a long long bucket holds exactly */
    }
    CachedBucket *bucket = cached_bucket(a, (long long)floored * a->bs);
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
python:
    result = 0;
    goto done;
error:
    result = -1;
done:
    Py_XDECREF(offset_obj);
    Py_XDECREF(value);
    Py_XDECREF(stamp);
    Py_XDECREF(raw);
    Py_XDECREF(ts);
    Py_XDECREF(keys);
    Py_XDECREF(event_value);
    Py_XDECREF(device);
    return result;
}

static PyObject *
fold_run(PyObject *module, PyObject *args)
{
    FoldArgs a;
    memset(&a, 0, sizeof(a));
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nOO!O!ddLLO!O!O!LL", &PyList_Type, &a.run, &start, &a.read,
                          &PyTuple_Type, &a.fields, &PyUnicode_Type, &a.unknown, &a.oldest,
                          &a.newest, &a.bs, &a.max_bytes, &PyDict_Type, &a.partials,
                          &PyDict_Type, &a.buffer, &PyDict_Type, &a.offsets, &a.buffered,
                          &a.limit)) {
        return NULL;
    }
    if (a.bs <= 0) {
        PyErr_SetString(PyExc_ValueError, "bucket seconds must be positive");
        return NULL;
    }
    if (PyTuple_GET_SIZE(a.fields) > MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "at most %d dimensions", MAX_DIMS);
        return NULL;
    }
    Py_INCREF(a.run);
    Py_ssize_t n = PyList_GET_SIZE(a.run);
    Py_ssize_t index = start < 0 ? 0 : start;
    long long counted = 0, skipped = 0;
    int failed = 0;
    while (index < n && a.buffered < a.limit) {
        PyObject *record = Py_NewRef(PyList_GET_ITEM(a.run, index));
        int outcome = fold_one(&a, record);
        Py_DECREF(record);
        if (outcome < 0) {
            failed = 1;
            break;
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
    for (int i = 0; i < BUCKETS_CACHED; i++) {
        Py_XDECREF(a.cache[i].obj);
    }
    Py_DECREF(a.run);
    if (failed) {
        return NULL;
    }
    return Py_BuildValue("nLLL", index, counted, skipped, a.buffered);
}

/* -- add_combos ----------------------------------------------------------- */

typedef struct {
    PyObject *agg;      /* borrowed from the partial */
    long long count, vcount;
    double vsum, low, high;
} Group;

typedef struct {
    PyObject *ranks;    /* device -> (register, rank), this call's cache */
    PyObject *rank_of;  /* Python: device -> (register, rank) */
    long zero_bin;
    double min_indexable, inv_log_gamma;
} Sketching;

static int
count_bin(PyObject *hist, PyObject *bin)
{
    PyObject *seen = PyDict_GetItemWithError(hist, bin);
    if (seen == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        return PyDict_SetItem(hist, bin, one);
    }
    PyObject *more = PyNumber_Add(seen, one);
    if (more == NULL) {
        return -1;
    }
    int failed = PyDict_SetItem(hist, bin, more);
    Py_DECREF(more);
    return failed;
}

/* The (register, rank) tuple of a device, borrowed from the cache. */
static PyObject *
rank_pair(Sketching *sk, PyObject *device)
{
    PyObject *pair = PyDict_GetItemWithError(sk->ranks, device);
    if (pair != NULL || PyErr_Occurred()) {
        return pair;
    }
    pair = PyObject_CallOneArg(sk->rank_of, device);
    if (pair == NULL) {
        return NULL;
    }
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_TypeError, "register_and_rank must return a pair");
        return NULL;
    }
    int failed = PyDict_SetItem(sk->ranks, device, pair);
    Py_DECREF(pair);
    return failed < 0 ? NULL : pair;
}

static int
raise_register(PyObject *regs, PyObject *pair)
{
    PyObject *reg = PyTuple_GET_ITEM(pair, 0);
    PyObject *rank = PyTuple_GET_ITEM(pair, 1);
    PyObject *held = PyDict_GetItemWithError(regs, reg);
    if (held == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        return PyDict_SetItem(regs, reg, rank);
    }
    int higher = PyObject_RichCompareBool(rank, held, Py_GT);
    if (higher < 0) {
        return -1;
    }
    return higher ? PyDict_SetItem(regs, reg, rank) : 0;
}

static int
add_to(PyObject *agg, PyObject *name, PyObject *amount)
{
    PyObject *old = PyObject_GetAttr(agg, name);
    if (old == NULL) {
        return -1;
    }
    PyObject *sum = PyNumber_Add(old, amount);
    Py_DECREF(old);
    if (sum == NULL) {
        return -1;
    }
    int failed = PyObject_SetAttr(agg, name, sum);
    Py_DECREF(sum);
    return failed;
}

/* _add_values's scalar part: vcount, vsum, vmin, vmax (the histogram is counted
 * as the values go by). */
static int
add_values(PyObject *agg, long long count, long long vcount, double vsum, double low,
           double high)
{
    int failed = -1;
    PyObject *n = PyLong_FromLongLong(count);
    if (n == NULL || add_to(agg, s_count, n) < 0) {
        goto done;
    }
    if (vcount) {
        PyObject *vc = PyLong_FromLongLong(vcount);
        if (vc == NULL) {
            goto done;
        }
        int bad = add_to(agg, s_vcount, vc);
        Py_DECREF(vc);
        PyObject *vs = bad ? NULL : PyFloat_FromDouble(vsum);
        if (vs == NULL) {
            goto done;
        }
        bad = add_to(agg, s_vsum, vs);
        Py_DECREF(vs);
        if (bad) {
            goto done;
        }
        PyObject *old = PyObject_GetAttr(agg, s_vmin);
        if (old == NULL) {
            goto done;
        }
        double held = PyFloat_AsDouble(old);
        Py_DECREF(old);
        if (held == -1.0 && PyErr_Occurred()) {
            goto done;
        }
        if (low < held) {
            PyObject *v = PyFloat_FromDouble(low);
            if (v == NULL || PyObject_SetAttr(agg, s_vmin, v) < 0) {
                Py_XDECREF(v);
                goto done;
            }
            Py_DECREF(v);
        }
        old = PyObject_GetAttr(agg, s_vmax);
        if (old == NULL) {
            goto done;
        }
        held = PyFloat_AsDouble(old);
        Py_DECREF(old);
        if (held == -1.0 && PyErr_Occurred()) {
            goto done;
        }
        if (high > held) {
            PyObject *v = PyFloat_FromDouble(high);
            if (v == NULL || PyObject_SetAttr(agg, s_vmax, v) < 0) {
                Py_XDECREF(v);
                goto done;
            }
            Py_DECREF(v);
        }
    }
    failed = 0;
done:
    Py_XDECREF(n);
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

static PyObject *
add_combos(PyObject *module, PyObject *args)
{
    PyObject *partial, *combos, *agg_type;
    Sketching sk;
    if (!PyArg_ParseTuple(args, "OO!OOldd", &partial, &PyDict_Type, &combos, &agg_type,
                          &sk.rank_of, &sk.zero_bin, &sk.min_indexable, &sk.inv_log_gamma)) {
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *total = NULL, *by = NULL, *total_hist = NULL, *total_regs = NULL;
    PyObject **bins = NULL;
    Group *groups = NULL;
    PyObject *group_of = NULL, *dim_hists = NULL, *dim_regs = NULL;
    Py_ssize_t nbins = 0;
    sk.ranks = NULL;

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
    total_hist = total ? PyObject_GetAttr(total, s_hist) : NULL;
    total_regs = total_hist ? PyObject_GetAttr(total, s_regs) : NULL;
    sk.ranks = PyDict_New();
    if (total_regs == NULL || sk.ranks == NULL) {
        goto done;
    }
    if (!PyDict_CheckExact(total_hist) || !PyDict_CheckExact(total_regs)) {
        PyErr_SetString(PyExc_TypeError, "an Agg's hist and regs must be dicts");
        goto done;
    }

    /* One pass over the combos in order: the total's histogram and registers, each
     * combo's scalars, and its bins (kept for the dimensions). */
    Py_ssize_t ncombos = PyDict_GET_SIZE(combos);
    Py_ssize_t nvalues = 0;
    {
        Py_ssize_t pos = 0;
        PyObject *keys, *combo;
        while (PyDict_Next(combos, &pos, &keys, &combo)) {
            nvalues += PyList_GET_SIZE(combo) / 2;
        }
    }
    bins = PyMem_Calloc(nvalues ? nvalues : 1, sizeof(PyObject *));
    double *sums = PyMem_Calloc(ncombos ? ncombos : 1, sizeof(double));
    double *lows = PyMem_Calloc(ncombos ? ncombos : 1, sizeof(double));
    double *highs = PyMem_Calloc(ncombos ? ncombos : 1, sizeof(double));
    long long *events = PyMem_Calloc(ncombos ? ncombos : 1, sizeof(long long));
    long long *vcounts = PyMem_Calloc(ncombos ? ncombos : 1, sizeof(long long));
    Py_ssize_t *first_bin = PyMem_Calloc(ncombos + 1, sizeof(Py_ssize_t));
    if (!bins || !sums || !lows || !highs || !events || !vcounts || !first_bin) {
        PyErr_NoMemory();
        goto free_arrays;
    }
    long long total_events = 0, total_vcount = 0;
    double total_sum = 0.0, total_low = INFINITY, total_high = -INFINITY;
    {
        Py_ssize_t pos = 0, c = 0;
        PyObject *keys, *combo;
        while (PyDict_Next(combos, &pos, &keys, &combo)) {
            Py_ssize_t size = PyList_GET_SIZE(combo);
            double sum = 0.0, low = INFINITY, high = -INFINITY;
            long long vcount = 0;
            first_bin[c] = nbins;
            for (Py_ssize_t i = 0; i < size; i += 2) {
                PyObject *v = PyList_GET_ITEM(combo, i);
                PyObject *dev = PyList_GET_ITEM(combo, i + 1);
                if (!Py_IsNone(v)) {
                    double x = PyFloat_AS_DOUBLE(v);
                    sum += x;
                    if (vcount == 0 || x < low) {
                        low = x;
                    }
                    if (vcount == 0 || x > high) {
                        high = x;
                    }
                    vcount++;
                    long bin = x < sk.min_indexable ? sk.zero_bin
                                                    : (long)ceil(log(x) * sk.inv_log_gamma);
                    PyObject *b = PyLong_FromLong(bin);
                    if (b == NULL) {
                        goto free_arrays;
                    }
                    bins[nbins++] = b;
                    if (count_bin(total_hist, b) < 0) {
                        goto free_arrays;
                    }
                }
                if (!Py_IsNone(dev)) {
                    PyObject *pair = rank_pair(&sk, dev);
                    if (pair == NULL || raise_register(total_regs, pair) < 0) {
                        goto free_arrays;
                    }
                }
            }
            sums[c] = sum;
            lows[c] = low;
            highs[c] = high;
            events[c] = size / 2;
            vcounts[c] = vcount;
            total_events += size / 2;
            total_vcount += vcount;
            total_sum += sum;
            if (vcount && (total_low > low)) {
                total_low = low;
            }
            if (vcount && (total_high < high)) {
                total_high = high;
            }
            c++;
        }
        first_bin[c] = nbins;
    }
    if (add_values(total, total_events, total_vcount, total_sum, total_low, total_high) < 0) {
        goto free_arrays;
    }

    /* Each dimension: the combos grouped by their key there, in order of first
     * appearance (the order Python creates the aggregates in). */
    groups = PyMem_Calloc(ncombos ? ncombos : 1, sizeof(Group));
    if (groups == NULL) {
        PyErr_NoMemory();
        goto free_arrays;
    }
    for (Py_ssize_t d = 0; d < dims; d++) {
        PyObject *dim_keys = PyTuple_GET_ITEM(by, d);
        if (!PyDict_CheckExact(dim_keys)) {
            PyErr_SetString(PyExc_TypeError, "Partial.by must hold dicts");
            goto free_arrays;
        }
        group_of = PyDict_New();
        dim_hists = PyList_New(0);
        dim_regs = PyList_New(0);
        if (group_of == NULL || dim_hists == NULL || dim_regs == NULL) {
            goto free_arrays;
        }
        Py_ssize_t ngroups = 0, pos = 0, c = 0;
        PyObject *keys, *combo;
        while (PyDict_Next(combos, &pos, &keys, &combo)) {
            PyObject *key = PyTuple_GET_ITEM(keys, d);
            PyObject *found = PyDict_GetItemWithError(group_of, key);
            Py_ssize_t g;
            if (found == NULL) {
                if (PyErr_Occurred()) {
                    goto free_arrays;
                }
                PyObject *agg = PyDict_GetItemWithError(dim_keys, key);
                if (agg == NULL) {
                    if (PyErr_Occurred()) {
                        goto free_arrays;
                    }
                    agg = PyObject_CallNoArgs(agg_type);
                    if (agg == NULL) {
                        goto free_arrays;
                    }
                    int bad = PyDict_SetItem(dim_keys, key, agg);
                    Py_DECREF(agg); /* dim_keys holds it */
                    if (bad < 0) {
                        goto free_arrays;
                    }
                }
                PyObject *hist = PyObject_GetAttr(agg, s_hist);
                if (hist == NULL) {
                    goto free_arrays;
                }
                int bad = PyList_Append(dim_hists, hist);
                Py_DECREF(hist);
                PyObject *regs = bad ? NULL : PyObject_GetAttr(agg, s_regs);
                if (regs == NULL) {
                    goto free_arrays;
                }
                bad = PyList_Append(dim_regs, regs);
                Py_DECREF(regs);
                if (bad < 0) {
                    goto free_arrays;
                }
                g = ngroups++;
                PyObject *index = PyLong_FromSsize_t(g);
                if (index == NULL) {
                    goto free_arrays;
                }
                bad = PyDict_SetItem(group_of, key, index);
                Py_DECREF(index);
                if (bad < 0) {
                    goto free_arrays;
                }
                groups[g].agg = agg;
                groups[g].count = 0;
                groups[g].vcount = 0;
                groups[g].vsum = 0.0;
                groups[g].low = INFINITY;
                groups[g].high = -INFINITY;
            }
            else {
                g = PyLong_AsSsize_t(found);
            }
            Group *group = &groups[g];
            group->count += events[c];
            if (vcounts[c]) {
                if (group->vcount == 0 || lows[c] < group->low) {
                    group->low = lows[c];
                }
                if (group->vcount == 0 || highs[c] > group->high) {
                    group->high = highs[c];
                }
                group->vcount += vcounts[c];
                group->vsum += sums[c];
            }
            PyObject *hist = PyList_GET_ITEM(dim_hists, g);
            PyObject *regs = PyList_GET_ITEM(dim_regs, g);
            for (Py_ssize_t b = first_bin[c]; b < first_bin[c + 1]; b++) {
                if (count_bin(hist, bins[b]) < 0) {
                    goto free_arrays;
                }
            }
            Py_ssize_t size = PyList_GET_SIZE(combo);
            for (Py_ssize_t i = 1; i < size; i += 2) {
                PyObject *dev = PyList_GET_ITEM(combo, i);
                if (!Py_IsNone(dev)) {
                    PyObject *pair = rank_pair(&sk, dev);
                    if (pair == NULL || raise_register(regs, pair) < 0) {
                        goto free_arrays;
                    }
                }
            }
            c++;
        }
        for (Py_ssize_t g = 0; g < ngroups; g++) {
            Group *group = &groups[g];
            if (add_values(group->agg, group->count, group->vcount, group->vsum, group->low,
                           group->high) < 0) {
                goto free_arrays;
            }
        }
        Py_CLEAR(group_of);
        Py_CLEAR(dim_hists);
        Py_CLEAR(dim_regs);
    }
    result = Py_NewRef(Py_True);
free_arrays:
    if (bins != NULL) {
        for (Py_ssize_t i = 0; i < nbins; i++) {
            Py_DECREF(bins[i]);
        }
    }
    PyMem_Free(bins);
    PyMem_Free(sums);
    PyMem_Free(lows);
    PyMem_Free(highs);
    PyMem_Free(events);
    PyMem_Free(vcounts);
    PyMem_Free(first_bin);
    PyMem_Free(groups);
done:
    Py_XDECREF(group_of);
    Py_XDECREF(dim_hists);
    Py_XDECREF(dim_regs);
    Py_XDECREF(sk.ranks);
    Py_XDECREF(total_hist);
    Py_XDECREF(total_regs);
    Py_XDECREF(total);
    Py_XDECREF(by);
    return result;
}

static PyMethodDef methods[] = {
    {"fold_run", fold_run, METH_VARARGS,
     "fold_run(run, start, read, fields, unknown, oldest, newest, bucket_seconds, "
     "max_bytes, partials, buffer, offsets, buffered, limit) -> (index, counted, skipped, "
     "buffered): fold run[start:] until a record Python must judge, or the buffer is full."},
    {"add_combos", add_combos, METH_VARARGS,
     "add_combos(partial, combos, Agg, register_and_rank, zero_bin, min_indexable, "
     "inv_log_gamma) -> bool: combos.add_combos in C; False (nothing changed) for "
     "input it leaves to Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "aggregator.core._native",
    "The map stage's fold and roll-up loops in C (see accumulate.py and combos.py).", -1,
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
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (*names[i].slot == NULL) {
            return NULL;
        }
    }
    one = PyLong_FromLong(1);
    if (one == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
