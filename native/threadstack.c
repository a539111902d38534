/*
 * LD_PRELOAD shim for the Orthanc process: no thread gets a stack smaller than 8 MiB.
 *
 * Why: Debian's civetweb (Orthanc 1.10 in bookworm, 1.13 in the latest lane) is built with
 * USE_STACK_SIZE=102400, so every HTTP worker thread has a 100 KiB stack. GDCM's
 * gdcm::ImageWriter::Write reserves 132 KiB of stack in one frame (sub $0x204d8,%rsp), so each
 * transcoding the GDCM plugin does in an HTTP thread (WADO-RS, /file with a transfer syntax)
 * runs past the guard page: Orthanc 1.10 died with SIGSEGV within 40 J2K->Explicit WADO-RS
 * retrievals in 10 of 10 processes, and a frame that jumps over the guard page can write into
 * another thread's memory instead. Python REST callbacks run on the same threads.
 *
 * 8 MiB is what glibc gives every thread created without an explicit size (RLIMIT_STACK),
 * so the other threads of the process are unchanged; the memory is virtual until touched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

#define TEACHFILE_MIN_STACK ((size_t)8 << 20)

int pthread_attr_setstacksize(pthread_attr_t *attr, size_t size)
{
    static int (*real)(pthread_attr_t *, size_t);
    if (real == NULL) {
        real = (int (*)(pthread_attr_t *, size_t))dlsym(RTLD_NEXT, "pthread_attr_setstacksize");
        if (real == NULL) {
            return 22; /* EINVAL: the thread then starts with the default (8 MiB) stack */
        }
    }
    return real(attr, size < TEACHFILE_MIN_STACK ? TEACHFILE_MIN_STACK : size);
}
