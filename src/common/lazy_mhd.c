/*
 * lazy_mhd.c - libmicrohttpd (and the GnuTLS it links), loaded when a
 * gateway or E2B listener first calls it (common/lazylib.h says why).
 * Every libmicrohttpd function ForgeBox calls is listed here with its
 * prototype from microhttpd.h.
 */
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>
#include <microhttpd.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_libmicrohttpd = FB_LAZYLIB_INIT("libmicrohttpd.so.12", "the HTTP gateway");
#define L fb_lazy_libmicrohttpd

FB_LAZY_FN(L, enum MHD_Result, MHD_add_response_header,
           (struct MHD_Response *response, const char *header, const char *content),
           (response, header, content))
FB_LAZY_FN(L, struct MHD_PostProcessor *, MHD_create_post_processor,
           (struct MHD_Connection *connection, size_t buffer_size, MHD_PostDataIterator iter,
            void *iter_cls),
           (connection, buffer_size, iter, iter_cls))
FB_LAZY_FN(L, struct MHD_Response *, MHD_create_response_from_buffer,
           (size_t size, void *buffer, enum MHD_ResponseMemoryMode mode), (size, buffer, mode))
FB_LAZY_FN(L, struct MHD_Response *, MHD_create_response_from_callback,
           (uint64_t size, size_t block_size, MHD_ContentReaderCallback crc, void *crc_cls,
            MHD_ContentReaderFreeCallback crfc),
           (size, block_size, crc, crc_cls, crfc))
FB_LAZY_FN(L, struct MHD_Response *, MHD_create_response_from_fd_at_offset64,
           (uint64_t size, int fd, uint64_t offset), (size, fd, offset))
FB_LAZY_FN(L, enum MHD_Result, MHD_destroy_post_processor, (struct MHD_PostProcessor *pp), (pp))
FB_LAZY_VOID(L, MHD_destroy_response, (struct MHD_Response *response), (response))
FB_LAZY_FN(L, const char *, MHD_lookup_connection_value,
           (struct MHD_Connection *connection, enum MHD_ValueKind kind, const char *key),
           (connection, kind, key))
FB_LAZY_FN(L, enum MHD_Result, MHD_lookup_connection_value_n,
           (struct MHD_Connection *connection, enum MHD_ValueKind kind, const char *key,
            size_t key_size, const char **value_ptr, size_t *value_size_ptr),
           (connection, kind, key, key_size, value_ptr, value_size_ptr))
FB_LAZY_FN(L, enum MHD_Result, MHD_post_process,
           (struct MHD_PostProcessor *pp, const char *post_data, size_t post_data_len),
           (pp, post_data, post_data_len))
FB_LAZY_FN(L, enum MHD_Result, MHD_queue_response,
           (struct MHD_Connection *connection, unsigned int status_code,
            struct MHD_Response *response),
           (connection, status_code, response))
FB_LAZY_FN(L, MHD_socket, MHD_quiesce_daemon, (struct MHD_Daemon *daemon), (daemon))
FB_LAZY_VOID(L, MHD_stop_daemon, (struct MHD_Daemon *daemon), (daemon))
FB_LAZY_VOID(L, MHD_suspend_connection, (struct MHD_Connection *connection), (connection))
FB_LAZY_VOID(L, MHD_resume_connection, (struct MHD_Connection *connection), (connection))
FB_LAZY_FN(L, const union MHD_DaemonInfo *, MHD_get_daemon_info,
           (struct MHD_Daemon *daemon, enum MHD_DaemonInfoType info_type, ...),
           (daemon, info_type))
FB_LAZY_FN(L, enum MHD_Result, MHD_set_connection_option,
           (struct MHD_Connection *connection, enum MHD_CONNECTION_OPTION option, ...),
           (connection, option))

/* Variadic, but the extra arguments are unused for every info type. */
FB_LAZY_FN(L, const union MHD_ConnectionInfo *, MHD_get_connection_info,
           (struct MHD_Connection *connection, enum MHD_ConnectionInfoType info_type, ...),
           (connection, info_type))

/* The option list goes on through the va_list form. */
struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    struct MHD_Daemon *(*f)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
                            MHD_AccessHandlerCallback, void *, va_list) =
        (struct MHD_Daemon * (*)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
                                 MHD_AccessHandlerCallback, void *, va_list))
            fb_lazylib_sym(&L, "MHD_start_daemon_va");
    va_list ap;
    va_start(ap, dh_cls);
    struct MHD_Daemon *d = f(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}
