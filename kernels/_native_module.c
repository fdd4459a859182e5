/*
 * _native_module.c - the thin CPython binding of kernels/src/ie_sampling.h.
 *
 * Only argument unpacking lives here: buffers through the buffer protocol (C-contiguous, item
 * size checked), plain scalars through PyArg_ParseTuple. The sampling itself runs with the GIL
 * released. The Python wrappers (kernels/_native_backend.py) validate dtypes, shapes and ranges;
 * the exact signatures are in _native.pyi.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "src/ie_sampling.h"

#define MAX_BUFFERS 8

/* Buffers acquired by one call, released together. */
typedef struct buffers {
    Py_buffer views[MAX_BUFFERS];
    int count;
} buffers;

static void release_all(buffers *b) {
    for (int i = 0; i < b->count; i++) PyBuffer_Release(&b->views[i]);
    b->count = 0;
}

/* Acquires a C-contiguous buffer whose items have `itemsize` bytes ('f'/'d' floats, else ints). */
static Py_buffer *acquire(buffers *b, PyObject *obj, Py_ssize_t itemsize, int want_float,
                          int writable, const char *what) {
    Py_buffer *view = &b->views[b->count];
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return NULL;
    b->count++;
    const char *fmt = view->format ? view->format : "B";
    char kind = fmt[strlen(fmt) - 1];
    int is_float = kind == 'f' || kind == 'd' || kind == 'e';
    if (view->itemsize != itemsize || is_float != want_float) {
        PyErr_Format(PyExc_TypeError, "%s must hold %zd-byte %s items, got format '%s'", what,
                     itemsize, want_float ? "float" : "integer", fmt);
        return NULL;
    }
    return view;
}

static Py_ssize_t items(const Py_buffer *view) { return view->len / view->itemsize; }

static PyObject *raise_status(ie_status status, long long row) {
    const char *prefix = row >= 0 ? "row " : "";
    char where[48] = "";
    if (row >= 0) PyOS_snprintf(where, sizeof where, "%s%lld: ", prefix, row);
    switch (status) {
    case IE_ERR_NO_CANDIDATE:
        return PyErr_Format(PyExc_ValueError, "%sno token can be sampled: every logit is -inf",
                            where);
    case IE_ERR_NONFINITE:
        return PyErr_Format(PyExc_ValueError,
                            "%slogits contain NaN or +inf (after penalties and temperature)",
                            where);
    case IE_ERR_EMPTY_MASK:
        return PyErr_Format(PyExc_ValueError, "%sthe allowed-token mask allows no token", where);
    case IE_ERR_BAD_ID:
        return PyErr_Format(PyExc_ValueError, "%sa history or mask id is outside [0, vocab)",
                            where);
    default:
        return PyErr_Format(PyExc_ValueError, "%svocab or workspace out of range", where);
    }
}

/* Parses one (plan, mask_active, rep_ids, n_rep, gen_ids, gen_counts, n_gen, allowed) row
 * description; only the first n_rep / n_gen entries of the arrays are used, and `allowed` is None
 * or a bitmask of exactly (vocab + 31) / 32 four-byte words. */
static int parse_row(PyObject *row, Py_ssize_t vocab, buffers *b, ie_params *p, ie_history *h) {
    PyObject *rep, *gen, *counts, *allowed;
    long long top_k = 0;
    Py_ssize_t n_rep = 0, n_gen = 0;
    if (!PyArg_ParseTuple(row, "(dddddLp)pOnOOnO", &p->temperature, &p->top_p,
                          &p->repetition_penalty, &p->presence_penalty, &p->frequency_penalty,
                          &top_k, &p->greedy, &p->mask_active, &rep, &n_rep, &gen, &counts,
                          &n_gen, &allowed)) {
        return -1;
    }
    p->top_k = top_k;
    p->allowed = NULL;
    Py_buffer *vr = acquire(b, rep, 4, 0, 0, "rep_ids");
    Py_buffer *vg = vr ? acquire(b, gen, 4, 0, 0, "gen_ids") : NULL;
    Py_buffer *vc = vg ? acquire(b, counts, 4, 0, 0, "gen_counts") : NULL;
    if (vc == NULL) return -1;
    if (n_rep < 0 || n_rep > items(vr) || n_gen < 0 || n_gen > items(vg) || n_gen > items(vc)) {
        PyErr_SetString(PyExc_ValueError, "history lengths exceed their arrays");
        return -1;
    }
    if (allowed != Py_None) {
        Py_buffer *va = acquire(b, allowed, 4, 0, 0, "allowed");
        if (va == NULL) return -1;
        const Py_ssize_t words = (vocab + 31) / 32;
        if (items(va) != words) {
            PyErr_Format(PyExc_ValueError, "allowed must have %zd words for vocab %zd, got %zd",
                         words, vocab, items(va));
            return -1;
        }
        p->allowed = va->buf;
    }
    *h = (ie_history){vr->buf, n_rep, vg->buf, vc->buf, n_gen};
    return 0;
}

static PyObject *py_workspace_bytes(PyObject *self, PyObject *arg) {
    (void)self;
    long long vocab = PyLong_AsLongLong(arg);
    if (vocab == -1 && PyErr_Occurred()) return NULL;
    size_t n = ie_workspace_bytes(vocab);
    if (n == 0) return PyErr_Format(PyExc_ValueError, "vocab must be in [1, 2**23], got %lld", vocab);
    return PyLong_FromSize_t(n);
}

static PyObject *py_isa(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(ie_isa());
}

static PyObject *py_select_isa(PyObject *self, PyObject *arg) {
    (void)self;
    const char *name = NULL;
    if (arg != Py_None && (name = PyUnicode_AsUTF8(arg)) == NULL) return NULL;
    if (ie_select_isa(name) != 0) {
        return PyErr_Format(PyExc_ValueError, "instruction set %R is unavailable here", arg);
    }
    Py_RETURN_NONE;
}

static PyObject *py_sample(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *logits_o, *row, *mask_o, *ws_o;
    double uniform;
    if (!PyArg_ParseTuple(args, "OOOdO", &logits_o, &row, &mask_o, &uniform, &ws_o)) return NULL;
    buffers b = {.count = 0};
    ie_params p;
    ie_history h;
    Py_buffer *logits = acquire(&b, logits_o, 4, 1, 1, "logits");
    Py_buffer *mask = logits ? acquire(&b, mask_o, 4, 0, 0, "mask_ids") : NULL;
    Py_buffer *ws = mask ? acquire(&b, ws_o, 1, 0, 1, "workspace") : NULL;
    if (ws == NULL || parse_row(row, items(logits), &b, &p, &h) < 0) {
        release_all(&b);
        return NULL;
    }
    int32_t token = -1;
    ie_status status;
    Py_BEGIN_ALLOW_THREADS
    status = ie_sample(logits->buf, items(logits), &p, &h, mask->buf, items(mask), uniform,
                       ws->buf, (size_t)ws->len, &token);
    Py_END_ALLOW_THREADS
    release_all(&b);
    if (status != IE_OK) return raise_status(status, -1);
    return PyLong_FromLong(token);
}

static PyObject *py_process(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *logits_o, *row, *mask_o;
    if (!PyArg_ParseTuple(args, "OOO", &logits_o, &row, &mask_o)) return NULL;
    buffers b = {.count = 0};
    ie_params p;
    ie_history h;
    Py_buffer *logits = acquire(&b, logits_o, 4, 1, 1, "logits");
    Py_buffer *mask = logits ? acquire(&b, mask_o, 4, 0, 0, "mask_ids") : NULL;
    if (mask == NULL || parse_row(row, items(logits), &b, &p, &h) < 0) {
        release_all(&b);
        return NULL;
    }
    ie_status status;
    Py_BEGIN_ALLOW_THREADS
    status = ie_process(logits->buf, items(logits), &p, &h, mask->buf, items(mask));
    Py_END_ALLOW_THREADS
    release_all(&b);
    if (status != IE_OK) return raise_status(status, -1);
    Py_RETURN_NONE;
}

/* Per-row buffers of a batch need more than MAX_BUFFERS views: one buffers block per row. */
static PyObject *py_sample_batch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *logits_o, *rows, *mask_o, *uniforms_o, *ws_o, *out_o;
    Py_ssize_t vocab;
    if (!PyArg_ParseTuple(args, "OnOOOOO", &logits_o, &vocab, &rows, &mask_o, &uniforms_o, &ws_o,
                          &out_o)) {
        return NULL;
    }
    if (!PyTuple_Check(rows)) return PyErr_Format(PyExc_TypeError, "rows must be a tuple");
    const Py_ssize_t n_rows = PyTuple_GET_SIZE(rows);
    buffers b = {.count = 0};
    Py_buffer *logits = acquire(&b, logits_o, 4, 1, 1, "logits");
    Py_buffer *mask = logits ? acquire(&b, mask_o, 4, 0, 0, "mask_ids") : NULL;
    Py_buffer *uni = mask ? acquire(&b, uniforms_o, 8, 1, 0, "uniforms") : NULL;
    Py_buffer *ws = uni ? acquire(&b, ws_o, 1, 0, 1, "workspace") : NULL;
    Py_buffer *out = ws ? acquire(&b, out_o, 4, 0, 1, "out") : NULL;
    if (out == NULL) goto fail_outer;
    if (vocab < 1 || items(logits) != n_rows * vocab || items(uni) != n_rows ||
        items(out) != n_rows) {
        PyErr_SetString(PyExc_ValueError, "logits, uniforms and out disagree on [B, V]");
        goto fail_outer;
    }
    buffers *row_bufs = PyMem_Calloc((size_t)n_rows + 1, sizeof(buffers));
    ie_params *params = PyMem_Calloc((size_t)n_rows + 1, sizeof(ie_params));
    ie_history *hist = PyMem_Calloc((size_t)n_rows + 1, sizeof(ie_history));
    PyObject *result = NULL;
    if (row_bufs == NULL || params == NULL || hist == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t r = 0; r < n_rows; r++) {
        if (parse_row(PyTuple_GET_ITEM(rows, r), vocab, &row_bufs[r], &params[r], &hist[r]) < 0) {
            goto done;
        }
    }
    int64_t failed = -1;
    ie_status status;
    Py_BEGIN_ALLOW_THREADS
    status = ie_sample_batch(logits->buf, n_rows, vocab, params, hist, mask->buf, items(mask),
                             uni->buf, ws->buf, (size_t)ws->len, out->buf, &failed);
    Py_END_ALLOW_THREADS
    if (status != IE_OK) {
        raise_status(status, (long long)failed);
    } else {
        result = Py_NewRef(Py_None);
    }
done:
    if (row_bufs != NULL) {
        for (Py_ssize_t r = 0; r < n_rows; r++) release_all(&row_bufs[r]);
    }
    PyMem_Free(row_bufs);
    PyMem_Free(params);
    PyMem_Free(hist);
    release_all(&b);
    return result;
fail_outer:
    release_all(&b);
    return NULL;
}

static PyMethodDef methods[] = {
    {"isa", py_isa, METH_NOARGS, "isa() -> the instruction set in use (avx2, sse2, neon, generic)."},
    {"select_isa", py_select_isa, METH_O,
     "select_isa(name or None) -> None; None picks the best available. Results never change."},
    {"workspace_bytes", py_workspace_bytes, METH_O,
     "workspace_bytes(vocab) -> bytes of scratch one sample call needs."},
    {"sample", py_sample, METH_VARARGS,
     "sample(logits, row, mask_ids, uniform, workspace) -> token id; logits change in place."},
    {"process", py_process, METH_VARARGS,
     "process(logits, row, mask_ids) -> None; the stages before top-k, in place."},
    {"sample_batch", py_sample_batch, METH_VARARGS,
     "sample_batch(logits, vocab, rows, mask_ids, uniforms, workspace, out) -> None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Native sampling kernels (see kernels/_native.pyi).", 0,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    ie_select_isa(NULL); /* choose at import, before any thread can sample */
    if (PyModule_AddIntConstant(m, "WEIGHT_BITS", IE_WEIGHT_BITS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_VOCAB", (long)IE_MAX_VOCAB) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
