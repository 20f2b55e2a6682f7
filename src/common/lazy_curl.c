/*
 * lazy_curl.c - libcurl, loaded when a provider, the CA client or a remote
 * verb first calls it (common/lazylib.h says why).  Every libcurl function
 * ForgeBox calls is listed here with its prototype from curl/curl.h.
 */
#define CURL_DISABLE_TYPECHECK /* the functions themselves, not the macros */
#include <curl/curl.h>
#include <stdarg.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_libcurl = FB_LAZYLIB_INIT("libcurl-gnutls.so.4", "HTTPS client calls");
#define L fb_lazy_libcurl

FB_LAZY_VOID(L, curl_easy_cleanup, (CURL *curl), (curl))
FB_LAZY_FN(L, CURL *, curl_easy_duphandle, (CURL *curl), (curl))
FB_LAZY_FN(L, char *, curl_easy_escape, (CURL *handle, const char *string, int length),
           (handle, string, length))
FB_LAZY_FN(L, char *, curl_easy_unescape,
           (CURL *handle, const char *string, int length, int *outlength),
           (handle, string, length, outlength))
FB_LAZY_FN(L, CURL *, curl_easy_init, (void), ())
FB_LAZY_FN(L, CURLcode, curl_easy_perform, (CURL *curl), (curl))
FB_LAZY_FN(L, CURLcode, curl_easy_pause, (CURL *handle, int bitmask), (handle, bitmask))
FB_LAZY_VOID(L, curl_easy_reset, (CURL *curl), (curl))
FB_LAZY_FN(L, const char *, curl_easy_strerror, (CURLcode code), (code))
FB_LAZY_VOID(L, curl_free, (void *p), (p))
FB_LAZY_VOID(L, curl_global_cleanup, (void), ())
FB_LAZY_FN(L, CURLcode, curl_global_init, (long flags), (flags))
FB_LAZY_FN(L, struct curl_slist *, curl_slist_append, (struct curl_slist *list, const char *data),
           (list, data))
FB_LAZY_VOID(L, curl_slist_free_all, (struct curl_slist *list), (list))
FB_LAZY_FN(L, CURLM *, curl_multi_init, (void), ())
FB_LAZY_FN(L, CURLMcode, curl_multi_add_handle, (CURLM *multi_handle, CURL *curl_handle),
           (multi_handle, curl_handle))
FB_LAZY_FN(L, CURLMcode, curl_multi_remove_handle, (CURLM *multi_handle, CURL *curl_handle),
           (multi_handle, curl_handle))
FB_LAZY_FN(L, CURLMcode, curl_multi_perform, (CURLM *multi_handle, int *running_handles),
           (multi_handle, running_handles))
FB_LAZY_FN(L, CURLMcode, curl_multi_poll,
           (CURLM *multi_handle, struct curl_waitfd extra_fds[], unsigned int extra_nfds,
            int timeout_ms, int *ret),
           (multi_handle, extra_fds, extra_nfds, timeout_ms, ret))
FB_LAZY_FN(L, CURLMcode, curl_multi_wakeup, (CURLM *multi_handle), (multi_handle))
FB_LAZY_FN(L, CURLMsg *, curl_multi_info_read, (CURLM *multi_handle, int *msgs_in_queue),
           (multi_handle, msgs_in_queue))
FB_LAZY_FN(L, CURLMcode, curl_multi_cleanup, (CURLM *multi_handle), (multi_handle))
FB_LAZY_FN(L, const char *, curl_multi_strerror, (CURLMcode code), (code))

FB_LAZY_FN(L, CURLSH *, curl_share_init, (void), ())
FB_LAZY_FN(L, CURLSHcode, curl_share_cleanup, (CURLSH *share), (share))

/* curl_share_setopt takes one more argument too: a lock data number for
 * SHARE/UNSHARE, a function for the lock callbacks, a pointer for USERDATA. */
CURLSHcode curl_share_setopt(CURLSH *share, CURLSHoption option, ...)
{
    static CURLSHcode (*fn)(CURLSH *, CURLSHoption, ...);
    CURLSHcode (*f)(CURLSH *, CURLSHoption, ...) = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (CURLSHcode(*)(CURLSH *, CURLSHoption, ...))fb_lazylib_sym(&L, "curl_share_setopt");
        __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
    }
    va_list ap;
    va_start(ap, option);
    CURLSHcode rc;
    if (option == CURLSHOPT_SHARE || option == CURLSHOPT_UNSHARE)
        rc = f(share, option, va_arg(ap, int));
    else if (option == CURLSHOPT_LOCKFUNC || option == CURLSHOPT_UNLOCKFUNC)
        rc = f(share, option, va_arg(ap, void (*)(void)));
    else
        rc = f(share, option, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

/* The two variadic calls take exactly one more argument, whose type the
 * option (or info) number says, as libcurl itself reads it. */
CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    static CURLcode (*fn)(CURL *, CURLoption, ...);
    CURLcode (*f)(CURL *, CURLoption, ...) = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (CURLcode(*)(CURL *, CURLoption, ...))fb_lazylib_sym(&L, "curl_easy_setopt");
        __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
    }
    va_list ap;
    va_start(ap, option);
    CURLcode rc;
    if (option < CURLOPTTYPE_OBJECTPOINT)
        rc = f(curl, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        rc = f(curl, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        rc = f(curl, option, va_arg(ap, void (*)(void)));
    else if (option < CURLOPTTYPE_BLOB)
        rc = f(curl, option, va_arg(ap, curl_off_t));
    else
        rc = f(curl, option, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    static CURLcode (*fn)(CURL *, CURLINFO, ...);
    CURLcode (*f)(CURL *, CURLINFO, ...) = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (CURLcode(*)(CURL *, CURLINFO, ...))fb_lazylib_sym(&L, "curl_easy_getinfo");
        __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
    }
    va_list ap;
    va_start(ap, info);
    void *out = va_arg(ap, void *); /* always a pointer to the result */
    va_end(ap);
    return f(curl, info, out);
}
