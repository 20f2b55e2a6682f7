/*
 * client.c - mutual TLS for ForgeBox's libcurl clients (ca.h): `forgebox
 * task` remote verbs and `forgebox mcp` today, gateway-to-node calls next.
 *
 * The settings come from FORGEBOX_CLIENT_CERT/_KEY/_CA/_CRL rather than
 * FORGEBOX_TLS_*: those names are already the gateway's own tls.cert and
 * tls.key in the configuration's environment mapping, and a client's
 * certificate exported in a shell must not become a gateway's server
 * certificate.  With a CA set, only that CA is trusted (not the system
 * store); TLS 1.3 is pinned whenever any of it is set.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <stdlib.h>

#include "ca/ca.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int fb_ca_client_from_env(fb_ca_client *c, fb_err *err)
{
    c->cert = env("FORGEBOX_CLIENT_CERT");
    c->key = env("FORGEBOX_CLIENT_KEY");
    c->ca = env("FORGEBOX_CLIENT_CA");
    c->crl = env("FORGEBOX_CLIENT_CRL");
    if ((c->cert == NULL) != (c->key == NULL))
        return fb_fail_code(err, -FB_CA_EINVAL,
                            "FORGEBOX_CLIENT_CERT and FORGEBOX_CLIENT_KEY must be set together (or neither)");
    return 0;
}

bool fb_ca_client_set(const fb_ca_client *c)
{
    return c->cert || c->key || c->ca || c->crl;
}

int fb_ca_client_apply(const fb_ca_client *c, void *curl, fb_err *err)
{
    CURL *h = curl;
    if (!fb_ca_client_set(c))
        return 0;
    CURLcode rc = curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)(CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_DEFAULT));
    if (rc == CURLE_OK && c->cert)
        rc = curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert);
    if (rc == CURLE_OK && c->cert)
        rc = curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    if (rc == CURLE_OK && c->key)
        rc = curl_easy_setopt(h, CURLOPT_SSLKEY, c->key);
    if (rc == CURLE_OK && c->ca)
        rc = curl_easy_setopt(h, CURLOPT_CAINFO, c->ca);
    if (rc == CURLE_OK && c->ca)
        rc = curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
    if (rc == CURLE_OK && c->crl)
        rc = curl_easy_setopt(h, CURLOPT_CRLFILE, c->crl);
    if (rc != CURLE_OK)
        return fb_fail_code(err, -FB_CA_ETLS, "libcurl refused the client TLS settings: %s", curl_easy_strerror(rc));
    return 0;
}
