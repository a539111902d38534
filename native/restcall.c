/*
 * A second, native Orthanc plugin beside the Python one, for what the Python plugin cannot do:
 * call Orthanc's REST API without the GIL (plugin 4.0), and answer uploads with the HTTP
 * statuses a client must see (every lane; see "Uploads" below).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static OrthancPluginContext *context_ = NULL;

static OrthancPluginErrorCode on_transcode(OrthancPluginMemoryBuffer *transcoded,
                                           const void *buffer, uint64_t size,
                                           const char *const *allowed, uint32_t count,
                                           uint8_t allow_new_uid);

enum { TEACHFILE_GET = 0, TEACHFILE_POST = 1, TEACHFILE_PUT = 2, TEACHFILE_DELETE = 3 };

ORTHANC_PLUGINS_API int32_t OrthancPluginInitialize(OrthancPluginContext *context)
{
    if (!OrthancPluginCheckVersion(context)) {
        return -1;
    }
    context_ = context;
    OrthancPluginSetDescription(context, "teachfile: Orthanc's REST API for the Python plugin, "
                                         "called without Python's GIL, and its ingest encoder");
    /* First of the transcoders (this plugin loads first); it declines until the Python side
     * installs its function, and declines what that function does not recognise. */
    if (OrthancPluginRegisterTranscoderCallback(context, on_transcode) !=
        OrthancPluginErrorCode_Success) {
        return -1;
    }
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


/*
 * Uploads: `/instances`, owned here when the Python plugin asks (teachfile_take_instances).
 *
 * Why in C: two answers only a native callback can give.
 * - Orthanc Explorer's upload is a multipart/form-data POST. Orthanc splits it and calls the
 *   `/instances` handler once per file through an output it then discards (HttpServer's
 *   MultipartFormDataHandler), so only an error reaches the browser, with the HTTP status of
 *   the error code. The Python plugin turns every Python error into OrthancPluginErrorCode_Plugin
 *   (HTTP 500); a native callback can return an error code registered with HTTP 400 or 422.
 * - Orthanc allocates a request's whole Content-Length before its handler runs, and the request
 *   filter can only answer an empty 403. A chunked REST callback's reader factory runs on the
 *   headers, before the body is read, and may return an error code registered with HTTP 413.
 *
 * Every POST is forwarded, with its headers and body, to the Python plugin's internal route
 * (`intake_`), which runs the node's pipeline and answers, in an envelope, the status and body
 * the client gets; for an Explorer file part that body is the error's details. Nothing here stores anything:
 * without the Python route (it failed to start) Orthanc answers 404 and the upload fails.
 */

enum { ERROR_400, ERROR_413, ERROR_422, ERROR_500, ERROR_503, ERROR_COUNT };

static char intake_[128];
static uint64_t max_body_ = 0;
static OrthancPluginErrorCode errors_[ERROR_COUNT];

static OrthancPluginErrorCode error_for(uint16_t status)
{
    switch (status) {
    case 400:
        return errors_[ERROR_400];
    case 413:
        return errors_[ERROR_413];
    case 422:
        return errors_[ERROR_422];
    case 503:
        return errors_[ERROR_503];
    default:
        return errors_[ERROR_500];
    }
}

static const char *header(const OrthancPluginHttpRequest *request, const char *name)
{
    for (uint32_t i = 0; i < request->headersCount; i++) {
        if (strcasecmp(request->headersKeys[i], name) == 0) {
            return request->headersValues[i];
        }
    }
    return NULL;
}

/* An Explorer file part: Orthanc hands the handler the part's own headers. */
static int is_form_part(uint32_t count, const char *const *keys)
{
    for (uint32_t i = 0; i < count; i++) {
        if (strcasecmp(keys[i], "content-disposition") == 0) {
            return 1;
        }
    }
    return 0;
}

static OrthancPluginErrorCode forward(OrthancPluginRestOutput *output, uint32_t count,
                                      const char *const *keys, const char *const *values,
                                      const void *body, uint32_t size)
{
    OrthancPluginMemoryBuffer answer = {NULL, 0};
    uint16_t status = 0;
    OrthancPluginErrorCode code = OrthancPluginCallRestApi(
        context_, &answer, NULL, &status, OrthancPluginHttpMethod_Post, intake_, count, keys,
        values, body, size, 1 /* after plugins: the Python plugin's route */);
    if (code != OrthancPluginErrorCode_Success) {
        return code;
    }
    /* Orthanc hands a plugin only 200 answers of its internal calls, so the route answers 200
     * with an envelope: the client's status as three digits and a newline, then the body. */
    const char *data = answer.data;
    if (status != 200 || answer.size < 4 || data[3] != '\n' || data[0] < '1' || data[0] > '5' ||
        data[1] < '0' || data[1] > '9' || data[2] < '0' || data[2] > '9') {
        if (answer.data != NULL) {
            OrthancPluginFreeMemoryBuffer(context_, &answer);
        }
        return errors_[ERROR_500];
    }
    status = (uint16_t)((data[0] - '0') * 100 + (data[1] - '0') * 10 + (data[2] - '0'));
    const char *payload = data + 4;
    uint32_t size_out = answer.size - 4;
    if (status == 200) {
        OrthancPluginAnswerBuffer(context_, output, payload, size_out, "application/json");
    } else if (is_form_part(count, keys)) {
        /* The details must be a C string: copy the body and terminate it. */
        char *details = malloc((size_t)size_out + 1);
        if (details != NULL) {
            memcpy(details, payload, size_out);
            details[size_out] = '\0';
            OrthancPluginSetHttpErrorDetails(context_, output, details, 0);
            free(details);
        }
        code = error_for(status);
    } else {
        OrthancPluginSendHttpStatus(context_, output, status, payload, size_out);
    }
    if (answer.data != NULL) {
        OrthancPluginFreeMemoryBuffer(context_, &answer);
    }
    return code;
}

/* GET arguments back into a query string (Orthanc has decoded them). */
static int append_encoded(char *target, size_t capacity, size_t *used, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        int plain = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                    (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.' || *c == '~';
        size_t need = plain ? 1 : 3;
        if (*used + need + 1 > capacity) {
            return 0;
        }
        if (plain) {
            target[(*used)++] = (char)*c;
        } else {
            target[(*used)++] = '%';
            target[(*used)++] = hex[*c >> 4];
            target[(*used)++] = hex[*c & 15];
        }
    }
    target[*used] = '\0';
    return 1;
}

static OrthancPluginErrorCode on_instances(OrthancPluginRestOutput *output, const char *url,
                                           const OrthancPluginHttpRequest *request)
{
    (void)url;
    if (request->method == OrthancPluginHttpMethod_Post) {
        /* Explorer's file parts, and bodies Orthanc read before calling a handler. */
        return forward(output, request->headersCount, request->headersKeys,
                       request->headersValues, request->body, request->bodySize);
    }
    if (request->method != OrthancPluginHttpMethod_Get) {
        OrthancPluginSendMethodNotAllowed(context_, output, "GET,POST");
        return OrthancPluginErrorCode_Success;
    }
    char uri[4096] = "/instances";
    size_t used = strlen(uri);
    for (uint32_t i = 0; i < request->getCount; i++) {
        if (used + 2 >= sizeof(uri)) {
            return OrthancPluginErrorCode_ParameterOutOfRange;
        }
        uri[used++] = i == 0 ? '?' : '&';
        uri[used] = '\0';
        if (!append_encoded(uri, sizeof(uri), &used, request->getKeys[i])) {
            return OrthancPluginErrorCode_ParameterOutOfRange;
        }
        if (request->getValues[i] != NULL && request->getValues[i][0] != '\0') {
            if (used + 2 >= sizeof(uri)) {
                return OrthancPluginErrorCode_ParameterOutOfRange;
            }
            uri[used++] = '=';
            uri[used] = '\0';
            if (!append_encoded(uri, sizeof(uri), &used, request->getValues[i])) {
                return OrthancPluginErrorCode_ParameterOutOfRange;
            }
        }
    }
    OrthancPluginMemoryBuffer answer = {NULL, 0};
    OrthancPluginErrorCode code = OrthancPluginRestApiGet(context_, &answer, uri);
    if (code == OrthancPluginErrorCode_Success) {
        OrthancPluginAnswerBuffer(context_, output, answer.data, answer.size,
                                  "application/json");
        OrthancPluginFreeMemoryBuffer(context_, &answer);
    }
    return code;
}

/* A plain POST /instances, read by Orthanc into this reader (headers first, then the body). */
typedef struct {
    char *body;
    uint64_t size;
    uint64_t capacity;
    int too_large; /* a chunked transfer that grew past max_body_: dropped, not held */
    uint32_t count;
    char **keys;
    char **values;
} Upload;

static void upload_free(Upload *upload)
{
    if (upload == NULL) {
        return;
    }
    for (uint32_t i = 0; i < upload->count; i++) {
        free(upload->keys[i]);
        free(upload->values[i]);
    }
    free(upload->keys);
    free(upload->values);
    free(upload->body);
    free(upload);
}

static OrthancPluginErrorCode upload_start(OrthancPluginServerChunkedRequestReader **reader,
                                           const char *url,
                                           const OrthancPluginHttpRequest *request)
{
    (void)url;
    const char *length = header(request, "content-length");
    if (length != NULL) {
        char *end = NULL;
        unsigned long long declared = strtoull(length, &end, 10);
        if (end != length && declared > max_body_) {
            return errors_[ERROR_413]; /* before Orthanc allocates it */
        }
    }
    Upload *upload = calloc(1, sizeof(Upload));
    if (upload == NULL) {
        return OrthancPluginErrorCode_NotEnoughMemory;
    }
    upload->keys = calloc(request->headersCount + 1, sizeof(char *));
    upload->values = calloc(request->headersCount + 1, sizeof(char *));
    if (upload->keys == NULL || upload->values == NULL) {
        upload_free(upload);
        return OrthancPluginErrorCode_NotEnoughMemory;
    }
    for (uint32_t i = 0; i < request->headersCount; i++) {
        upload->keys[i] = strdup(request->headersKeys[i]);
        upload->values[i] = strdup(request->headersValues[i]);
        upload->count = i + 1;
        if (upload->keys[i] == NULL || upload->values[i] == NULL) {
            upload_free(upload);
            return OrthancPluginErrorCode_NotEnoughMemory;
        }
    }
    *reader = (OrthancPluginServerChunkedRequestReader *)upload;
    return OrthancPluginErrorCode_Success;
}

static OrthancPluginErrorCode upload_chunk(OrthancPluginServerChunkedRequestReader *reader,
                                           const void *data, uint32_t size)
{
    Upload *upload = (Upload *)reader;
    if (upload->too_large || upload->size + size > max_body_) {
        /* A chunked transfer (no Content-Length) past the limit. Orthanc ignores this call's
         * error and reads on, so the body is dropped here and execute answers 413. */
        upload->too_large = 1;
        free(upload->body);
        upload->body = NULL;
        upload->size = upload->capacity = 0;
        return errors_[ERROR_413];
    }
    if (upload->size + size > upload->capacity) {
        uint64_t capacity = upload->capacity ? upload->capacity : 65536;
        while (capacity < upload->size + size) {
            capacity *= 2;
        }
        char *grown = realloc(upload->body, capacity);
        if (grown == NULL) {
            return OrthancPluginErrorCode_NotEnoughMemory;
        }
        upload->body = grown;
        upload->capacity = capacity;
    }
    memcpy(upload->body + upload->size, data, size);
    upload->size += size;
    return OrthancPluginErrorCode_Success;
}

static OrthancPluginErrorCode upload_execute(OrthancPluginServerChunkedRequestReader *reader,
                                             OrthancPluginRestOutput *output)
{
    Upload *upload = (Upload *)reader;
    if (upload->too_large) {
        return errors_[ERROR_413];
    }
    return forward(output, upload->count, (const char *const *)upload->keys,
                   (const char *const *)upload->values, upload->body, (uint32_t)upload->size);
}

static void upload_finalize(OrthancPluginServerChunkedRequestReader *reader)
{
    upload_free((Upload *)reader); /* no body is held after its request */
}

/*
 * Called once by the Python plugin while Orthanc loads it (so these callbacks come before its
 * own): `intake` is its internal route, `max_body` the largest body accepted (bytes, at most
 * 4 GiB - 1, the SDK's body size). Returns 0, or -1 when it cannot take the uploads.
 */
int32_t teachfile_take_instances(const char *intake, uint64_t max_body)
{
    static const struct {
        uint16_t status;
        const char *message;
    } kinds[ERROR_COUNT] = {
        {400, "the node refused the upload: it is not readable DICOM (see Details)"},
        {413, NULL},
        {422, "the node refused the upload: it could not make it safe to store (see Details)"},
        {500, "the node could not store the upload; see its log"},
        {503, "the node is not ready: nothing is stored"},
    };
    static char too_large[160];
    if (context_ == NULL || intake == NULL || strlen(intake) >= sizeof(intake_) ||
        intake[0] != '/' || intake_[0] != '\0' || max_body == 0 || max_body > 0xFFFFFFFFull) {
        return -1;
    }
    snprintf(too_large, sizeof(too_large),
             "request body above Teachfile.MaxBodyMegabytes (%llu MB): not read, nothing stored",
             (unsigned long long)(max_body >> 20));
    for (int i = 0; i < ERROR_COUNT; i++) {
        errors_[i] = OrthancPluginRegisterErrorCode(
            context_, i + 1, kinds[i].status, kinds[i].message ? kinds[i].message : too_large);
    }
    strcpy(intake_, intake);
    max_body_ = max_body;
    OrthancPluginRegisterChunkedRestCallback(context_, "/instances", NULL, upload_start, NULL,
                                             NULL, upload_chunk, upload_execute,
                                             upload_finalize);
    OrthancPluginRegisterRestCallbackNoLock(context_, "/instances", on_instances);
    return 0;
}

/*
 * Ingest transcoding outside Orthanc's plugin mutex.
 *
 * Why: Orthanc runs the received-instance callback under its plugin mutex, so an encode done
 * there (the Python plugin's) runs one instance at a time whatever the number of associations,
 * while "IngestTranscoding" runs after that callback, on each association's own thread, under
 * a shared lock only. The Python plugin cannot register a transcoder; this plugin registers one
 * and hands each request to the function the Python side installed (a ctypes callback, which
 * takes the GIL; the encoder it calls releases it). That function recognises only the
 * instances its own received-instance callback prepared for it and declines everything else,
 * which then goes to the next transcoder (GDCM) as before.
 */
typedef int32_t (*teachfile_transcoder_fn)(const void *buffer, uint64_t size, void *sink);

static teachfile_transcoder_fn transcoder_ = NULL;

#define TEACHFILE_J2K_LOSSLESS "1.2.840.10008.1.2.4.90"

static OrthancPluginErrorCode on_transcode(OrthancPluginMemoryBuffer *transcoded,
                                           const void *buffer, uint64_t size,
                                           const char *const *allowed, uint32_t count,
                                           uint8_t allow_new_uid)
{
    teachfile_transcoder_fn fn = __atomic_load_n(&transcoder_, __ATOMIC_ACQUIRE);
    (void)allow_new_uid;
    transcoded->data = NULL;
    transcoded->size = 0;
    /* Ingest asks for exactly one syntax; anything else (a peer's, a /modify) is not ours. */
    if (fn == NULL || context_ == NULL || count != 1 || allowed == NULL || allowed[0] == NULL ||
        strcmp(allowed[0], TEACHFILE_J2K_LOSSLESS) != 0) {
        return OrthancPluginErrorCode_Plugin;
    }
    if (fn(buffer, size, transcoded) != 0 || transcoded->data == NULL) {
        if (transcoded->data != NULL) {
            OrthancPluginFreeMemoryBuffer(context_, transcoded);
        }
        transcoded->data = NULL;
        transcoded->size = 0;
        return OrthancPluginErrorCode_Plugin;  /* declined: the next transcoder may try */
    }
    return OrthancPluginErrorCode_Success;
}

/* Called by the installed function, once, with the transcoded instance. */
int32_t teachfile_transcoded(void *sink, const void *data, uint64_t size)
{
    OrthancPluginMemoryBuffer *out = (OrthancPluginMemoryBuffer *)sink;
    if (context_ == NULL || out == NULL || out->data != NULL || size == 0 || size > UINT32_MAX) {
        return -1;
    }
    if (OrthancPluginCreateMemoryBuffer(context_, out, (uint32_t)size) !=
        OrthancPluginErrorCode_Success) {
        out->data = NULL;
        return -1;
    }
    memcpy(out->data, data, size);
    return 0;
}

/* Install (or, with NULL, remove) the Python side's function; 0 once Orthanc loaded this. */
int32_t teachfile_set_transcoder(teachfile_transcoder_fn fn)
{
    if (context_ == NULL) {
        return -1;
    }
    __atomic_store_n(&transcoder_, fn, __ATOMIC_RELEASE);
    return 0;
}
