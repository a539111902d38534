/*
 * A second, native Orthanc plugin: Orthanc's REST API for the Python plugin, called without
 * the GIL (Orthanc 1.10 + Python plugin 4.0 only).
 *
 * Why: Orthanc runs the received-instance callback under its plugin mutex, and the Python
 * plugin then takes the GIL. Python plugin 4.0 keeps the GIL while a Python thread is inside
 * an SDK call (4.3 added `Python.AllowThreads` to release it). So a REST callback that stores
 * with orthanc.RestApiPost("/instances") holds the GIL while it waits for the plugin mutex,
 * while the thread that holds the mutex (a C-STORE, or another upload whose encoder released
 * the GIL) waits for the GIL: a deadlock. Measured on Debian's Orthanc 1.10.1: three REST
 * uploaders and three C-STORE associations stopped for good after 16 uploads, every DICOM
 * and HTTP thread waiting.
 *
 * ctypes releases the GIL around a foreign call, so the Python plugin calls these functions
 * instead of its own wrappers: the thread waits for the mutex without the GIL, and the
 * received-instance callback it triggers takes the GIL back on the same thread as usual.
 * Orthanc loads this file from its "Plugins" list; the Python side opens the same file, which
 * the dynamic loader resolves to the same loaded object, so it sees the context stored here.
 */
#include <orthanc/OrthancCPlugin.h>
#include <stddef.h>

static OrthancPluginContext *context_ = NULL;

enum { TEACHFILE_GET = 0, TEACHFILE_POST = 1, TEACHFILE_PUT = 2, TEACHFILE_DELETE = 3 };

ORTHANC_PLUGINS_API int32_t OrthancPluginInitialize(OrthancPluginContext *context)
{
    if (!OrthancPluginCheckVersion(context)) {
        return -1;
    }
    context_ = context;
    OrthancPluginSetDescription(context, "teachfile: Orthanc's REST API for the Python plugin, "
                                         "called without Python's GIL");
    return 0;
}

ORTHANC_PLUGINS_API void OrthancPluginFinalize(void)
{
    context_ = NULL;
}

ORTHANC_PLUGINS_API const char *OrthancPluginGetName(void)
{
    return "teachfile-restcall";
}

ORTHANC_PLUGINS_API const char *OrthancPluginGetVersion(void)
{
    return "1.0";
}

/* 1 once Orthanc has initialised this plugin (the Python side checks before using it). */
int32_t teachfile_restcall_ready(void)
{
    return context_ != NULL;
}

/*
 * One call of Orthanc's built-in REST API, as orthanc.RestApiGet/Post/Put/Delete make it.
 * Returns an OrthancPluginErrorCode; on success `answer` holds the answer body (none for
 * DELETE), which the caller frees with teachfile_restcall_free.
 */
int32_t teachfile_restcall(int32_t method, const char *uri, const void *body, uint32_t size,
                           OrthancPluginMemoryBuffer *answer)
{
    if (context_ == NULL) {
        return OrthancPluginErrorCode_BadSequenceOfCalls;
    }
    answer->data = NULL;
    answer->size = 0;
    switch (method) {
    case TEACHFILE_GET:
        return OrthancPluginRestApiGet(context_, answer, uri);
    case TEACHFILE_POST:
        return OrthancPluginRestApiPost(context_, answer, uri, body, size);
    case TEACHFILE_PUT:
        return OrthancPluginRestApiPut(context_, answer, uri, body, size);
    case TEACHFILE_DELETE:
        return OrthancPluginRestApiDelete(context_, uri);
    default:
        return OrthancPluginErrorCode_ParameterOutOfRange;
    }
}

void teachfile_restcall_free(OrthancPluginMemoryBuffer *answer)
{
    if (context_ != NULL && answer->data != NULL) {
        OrthancPluginFreeMemoryBuffer(context_, answer);
    }
    answer->data = NULL;
    answer->size = 0;
}
