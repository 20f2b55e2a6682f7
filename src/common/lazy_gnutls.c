/*
 * lazy_gnutls.c - GnuTLS, loaded when the CA or a gateway's mutual TLS
 * first calls it (common/lazylib.h says why).  Every GnuTLS function
 * ForgeBox calls is listed here with its prototype from gnutls/gnutls.h or x509.h;
 * gnutls_free, a variable there, is a pointer to a forwarder.
 */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <time.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_gnutls = FB_LAZYLIB_INIT("libgnutls.so.30", "the certificate authority and mutual TLS");
#define L fb_lazy_gnutls

static void free_forward(void *p)
{
    static gnutls_free_function fn;
    gnutls_free_function f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
    if (!f) {
        f = *(gnutls_free_function *)fb_lazylib_sym(&L, "gnutls_free");
        __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
    }
    f(p);
}
gnutls_free_function gnutls_free = free_forward;

FB_LAZY_FN(L, const gnutls_datum_t *, gnutls_certificate_get_peers,
           (gnutls_session_t session, unsigned int *list_size), (session, list_size))
FB_LAZY_FN(L, int, gnutls_certificate_verification_status_print,
           (unsigned int status, gnutls_certificate_type_t type, gnutls_datum_t *out,
            unsigned int flags),
           (status, type, out, flags))
FB_LAZY_FN(L, int, gnutls_pem_base64_decode2,
           (const char *header, const gnutls_datum_t *b64_data, gnutls_datum_t *result),
           (header, b64_data, result))
FB_LAZY_VOID(L, gnutls_memset, (void *data, int c, size_t size), (data, c, size))
FB_LAZY_FN(L, const char *, gnutls_strerror, (int error), (error))
FB_LAZY_VOID(L, gnutls_x509_crl_deinit, (gnutls_x509_crl_t crl), (crl))
FB_LAZY_FN(L, int, gnutls_x509_crl_export2,
           (gnutls_x509_crl_t crl, gnutls_x509_crt_fmt_t format, gnutls_datum_t *out),
           (crl, format, out))
FB_LAZY_FN(L, int, gnutls_x509_crl_import,
           (gnutls_x509_crl_t crl, const gnutls_datum_t *data, gnutls_x509_crt_fmt_t format),
           (crl, data, format))
FB_LAZY_FN(L, int, gnutls_x509_crl_init, (gnutls_x509_crl_t *crl), (crl))
FB_LAZY_FN(L, int, gnutls_x509_crl_set_authority_key_id,
           (gnutls_x509_crl_t crl, const void *id, size_t id_size), (crl, id, id_size))
FB_LAZY_FN(L, int, gnutls_x509_crl_set_crt_serial,
           (gnutls_x509_crl_t crl, const void *serial, size_t serial_size, time_t revocation_time),
           (crl, serial, serial_size, revocation_time))
FB_LAZY_FN(L, int, gnutls_x509_crl_set_next_update, (gnutls_x509_crl_t crl, time_t exp_time),
           (crl, exp_time))
FB_LAZY_FN(L, int, gnutls_x509_crl_set_number,
           (gnutls_x509_crl_t crl, const void *nr, size_t nr_size), (crl, nr, nr_size))
FB_LAZY_FN(L, int, gnutls_x509_crl_set_this_update, (gnutls_x509_crl_t crl, time_t act_time),
           (crl, act_time))
FB_LAZY_FN(L, int, gnutls_x509_crl_set_version, (gnutls_x509_crl_t crl, unsigned int version),
           (crl, version))
FB_LAZY_FN(L, int, gnutls_x509_crl_sign2,
           (gnutls_x509_crl_t crl, gnutls_x509_crt_t issuer, gnutls_x509_privkey_t issuer_key,
            gnutls_digest_algorithm_t dig, unsigned int flags),
           (crl, issuer, issuer_key, dig, flags))
FB_LAZY_FN(L, int, gnutls_x509_crl_verify,
           (gnutls_x509_crl_t crl, const gnutls_x509_crt_t *CA_list, unsigned CA_list_length,
            unsigned int flags, unsigned int *verify),
           (crl, CA_list, CA_list_length, flags, verify))
FB_LAZY_FN(L, time_t, gnutls_x509_crt_get_expiration_time, (gnutls_x509_crt_t cert), (cert))
FB_LAZY_FN(L, int, gnutls_x509_crt_check_revocation,
           (gnutls_x509_crt_t cert, const gnutls_x509_crl_t *crl_list, unsigned crl_list_length),
           (cert, crl_list, crl_list_length))
FB_LAZY_VOID(L, gnutls_x509_crt_deinit, (gnutls_x509_crt_t cert), (cert))
FB_LAZY_FN(L, int, gnutls_x509_crt_export2,
           (gnutls_x509_crt_t cert, gnutls_x509_crt_fmt_t format, gnutls_datum_t *out),
           (cert, format, out))
FB_LAZY_FN(L, int, gnutls_x509_crt_get_ca_status, (gnutls_x509_crt_t cert, unsigned int *critical),
           (cert, critical))
FB_LAZY_FN(L, int, gnutls_x509_crt_get_key_id,
           (gnutls_x509_crt_t crt, unsigned int flags, unsigned char *output_data,
            size_t *output_data_size),
           (crt, flags, output_data, output_data_size))
FB_LAZY_FN(L, int, gnutls_x509_crt_get_serial,
           (gnutls_x509_crt_t cert, void *result, size_t *result_size), (cert, result, result_size))
FB_LAZY_FN(L, int, gnutls_x509_crt_get_subject_alt_name,
           (gnutls_x509_crt_t cert, unsigned int seq, void *san, size_t *san_size,
            unsigned int *critical),
           (cert, seq, san, san_size, critical))
FB_LAZY_FN(L, int, gnutls_x509_crt_get_subject_key_id,
           (gnutls_x509_crt_t cert, void *ret, size_t *ret_size, unsigned int *critical),
           (cert, ret, ret_size, critical))
FB_LAZY_FN(L, int, gnutls_x509_crt_import,
           (gnutls_x509_crt_t cert, const gnutls_datum_t *data, gnutls_x509_crt_fmt_t format),
           (cert, data, format))
FB_LAZY_FN(L, int, gnutls_x509_crt_init, (gnutls_x509_crt_t *cert), (cert))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_activation_time, (gnutls_x509_crt_t cert, time_t act_time),
           (cert, act_time))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_authority_key_id,
           (gnutls_x509_crt_t cert, const void *id, size_t id_size), (cert, id, id_size))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_basic_constraints,
           (gnutls_x509_crt_t crt, unsigned int ca, int pathLenConstraint),
           (crt, ca, pathLenConstraint))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_dn_by_oid,
           (gnutls_x509_crt_t crt, const char *oid, unsigned int raw_flag, const void *name,
            unsigned int sizeof_name),
           (crt, oid, raw_flag, name, sizeof_name))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_expiration_time, (gnutls_x509_crt_t cert, time_t exp_time),
           (cert, exp_time))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_key, (gnutls_x509_crt_t crt, gnutls_x509_privkey_t key),
           (crt, key))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_key_purpose_oid,
           (gnutls_x509_crt_t cert, const void *oid, unsigned int critical), (cert, oid, critical))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_key_usage, (gnutls_x509_crt_t crt, unsigned int usage),
           (crt, usage))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_serial,
           (gnutls_x509_crt_t cert, const void *serial, size_t serial_size),
           (cert, serial, serial_size))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_subject_alt_name,
           (gnutls_x509_crt_t crt, gnutls_x509_subject_alt_name_t type, const void *data,
            unsigned int data_size, unsigned int flags),
           (crt, type, data, data_size, flags))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_subject_key_id,
           (gnutls_x509_crt_t cert, const void *id, size_t id_size), (cert, id, id_size))
FB_LAZY_FN(L, int, gnutls_x509_crt_set_version, (gnutls_x509_crt_t crt, unsigned int version),
           (crt, version))
FB_LAZY_FN(L, int, gnutls_x509_crt_sign2,
           (gnutls_x509_crt_t crt, gnutls_x509_crt_t issuer, gnutls_x509_privkey_t issuer_key,
            gnutls_digest_algorithm_t dig, unsigned int flags),
           (crt, issuer, issuer_key, dig, flags))
FB_LAZY_VOID(L, gnutls_x509_privkey_deinit, (gnutls_x509_privkey_t key), (key))
FB_LAZY_FN(L, int, gnutls_x509_privkey_export2_pkcs8,
           (gnutls_x509_privkey_t key, gnutls_x509_crt_fmt_t format, const char *password,
            unsigned int flags, gnutls_datum_t *out),
           (key, format, password, flags, out))
FB_LAZY_FN(L, int, gnutls_x509_privkey_generate,
           (gnutls_x509_privkey_t key, gnutls_pk_algorithm_t algo, unsigned int bits,
            unsigned int flags),
           (key, algo, bits, flags))
FB_LAZY_FN(L, int, gnutls_x509_privkey_import,
           (gnutls_x509_privkey_t key, const gnutls_datum_t *data, gnutls_x509_crt_fmt_t format),
           (key, data, format))
FB_LAZY_FN(L, int, gnutls_x509_privkey_init, (gnutls_x509_privkey_t *key), (key))
FB_LAZY_FN(L, int, gnutls_x509_trust_list_add_cas,
           (gnutls_x509_trust_list_t list, const gnutls_x509_crt_t *clist, unsigned clist_size,
            unsigned int flags),
           (list, clist, clist_size, flags))
FB_LAZY_VOID(L, gnutls_x509_trust_list_deinit, (gnutls_x509_trust_list_t list, unsigned int all),
             (list, all))
FB_LAZY_FN(L, int, gnutls_x509_trust_list_init, (gnutls_x509_trust_list_t *list, unsigned int size),
           (list, size))
FB_LAZY_FN(L, int, gnutls_x509_trust_list_verify_crt2,
           (gnutls_x509_trust_list_t list, gnutls_x509_crt_t *cert_list,
            unsigned int cert_list_size, gnutls_typed_vdata_st *data, unsigned int elements,
            unsigned int flags, unsigned int *voutput, gnutls_verify_output_function func),
           (list, cert_list, cert_list_size, data, elements, flags, voutput, func))
