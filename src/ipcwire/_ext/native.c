/* ipcwire._ext._native: the shared-memory ring (ringobject.c over ring.c) and the C floor
 * benchmarks (floor.c). Errors are ipcwire.errors classes, looked up once here. */
#include "native.h"
#include "ring.h"

PyObject *ipcw_RemoteProtocolError;
PyObject *ipcw_LocalProtocolError;
PyObject *ipcw_ChannelBroken;
PyObject *ipcw_ChannelClosed;
PyObject *ipcw_EndOfChannel;
PyObject *ipcw_Timeout;
PyObject *ipcw_FrameTooLarge;
PyObject *ipcw_ConfigurationError;

extern PyTypeObject ipcw_FrameSenderType;   /* stream.c */
extern PyTypeObject ipcw_FrameReceiverType; /* stream.c */

static PyMethodDef module_methods[] = {
    {"init_ring", (PyCFunction)(void (*)(void))ipcw_init_ring, METH_VARARGS | METH_KEYWORDS,
     "init_ring(buffer, capacity, offset=0): write a fresh ring header"},
    {"floor_pingpong", (PyCFunction)(void (*)(void))ipcw_floor_pingpong,
     METH_VARARGS | METH_KEYWORDS,
     "floor_pingpong(kind, iterations, size=64, cpus=None, gap_ns=0) -> list of round-trip ns"},
    {"memcpy_bandwidth", (PyCFunction)(void (*)(void))ipcw_memcpy_bandwidth,
     METH_VARARGS | METH_KEYWORDS, "memcpy_bandwidth(size, iterations) -> bytes per second"},
    {"recv_within", (PyCFunction)ipcw_recv_within, METH_VARARGS,
     "recv_within(fd, buffer, timeout, current) -> n: a recv() whose wait signals do not "
     "restart (see stream.c)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "ipcwire._ext._native",
    "Shared-memory ring and C floor benchmarks (see ipcwire.shm).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int load_errors(void)
{
    PyObject *errors = PyImport_ImportModule("ipcwire.errors");
    if (errors == NULL)
        return -1;
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&ipcw_RemoteProtocolError, "RemoteProtocolError"},
        {&ipcw_LocalProtocolError, "LocalProtocolError"},
        {&ipcw_ChannelBroken, "ChannelBroken"},
        {&ipcw_ChannelClosed, "ChannelClosed"},
        {&ipcw_EndOfChannel, "EndOfChannel"},
        {&ipcw_Timeout, "Timeout"},
        {&ipcw_FrameTooLarge, "FrameTooLarge"},
        {&ipcw_ConfigurationError, "ConfigurationError"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        Py_XSETREF(*names[i].slot, PyObject_GetAttrString(errors, names[i].name));
        if (*names[i].slot == NULL) {
            Py_DECREF(errors);
            return -1;
        }
    }
    Py_DECREF(errors);
    return 0;
}

PyMODINIT_FUNC PyInit__native(void)
{
    if (load_errors() < 0 || PyType_Ready(&ipcw_RingType) < 0 ||
        PyType_Ready(&ipcw_FrameSenderType) < 0 || PyType_Ready(&ipcw_FrameReceiverType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Ring", (PyObject *)&ipcw_RingType) < 0 ||
        PyModule_AddObjectRef(m, "FrameSender", (PyObject *)&ipcw_FrameSenderType) < 0 ||
        PyModule_AddObjectRef(m, "FrameReceiver", (PyObject *)&ipcw_FrameReceiverType) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_SIZE", IPCW_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "VERSION", IPCW_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "RECORD_HEADER", IPCW_REC_HDR) < 0 ||
        PyModule_AddIntConstant(m, "ALIGN", IPCW_ALIGN) < 0 ||
        PyModule_AddIntConstant(m, "MIN_CAPACITY", IPCW_MIN_CAPACITY) < 0 ||
        PyModule_AddObject(m, "MAX_CAPACITY", PyLong_FromUnsignedLongLong(IPCW_MAX_CAPACITY)) <
            0 ||
        PyModule_AddObject(m, "MAGIC", PyLong_FromUnsignedLongLong(IPCW_MAGIC)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
