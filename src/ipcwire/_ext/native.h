/* Declarations shared by the files of ipcwire._ext._native. */
#ifndef IPCWIRE_NATIVE_H
#define IPCWIRE_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* ipcwire.errors classes, looked up once at import */
extern PyObject *ipcw_RemoteProtocolError;
extern PyObject *ipcw_LocalProtocolError;
extern PyObject *ipcw_ChannelBroken;
extern PyObject *ipcw_ChannelClosed;
extern PyObject *ipcw_EndOfChannel;
extern PyObject *ipcw_Timeout;
extern PyObject *ipcw_FrameTooLarge;
extern PyObject *ipcw_ConfigurationError;

extern PyTypeObject ipcw_RingType;

PyObject *ipcw_init_ring(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *ipcw_floor_pingpong(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *ipcw_memcpy_bandwidth(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *ipcw_recv_within(PyObject *module, PyObject *args);

#endif
