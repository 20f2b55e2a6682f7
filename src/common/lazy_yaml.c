/*
 * lazy_yaml.c - libyaml, loaded when a configuration file is first parsed
 * (common/lazylib.h says why: `forgebox run` without a forgebox.yaml reads
 * no YAML).  Every libyaml function ForgeBox calls (src/config/yaml.c) is
 * listed here with its prototype from yaml.h.
 */
#include <yaml.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_libyaml = FB_LAZYLIB_INIT("libyaml-0.so.2", "reading forgebox.yaml");
#define L fb_lazy_libyaml

FB_LAZY_VOID(L, yaml_document_delete, (yaml_document_t * d), (d))
FB_LAZY_FN(L, yaml_node_t *, yaml_document_get_node, (yaml_document_t * d, int index), (d, index))
FB_LAZY_FN(L, yaml_node_t *, yaml_document_get_root_node, (yaml_document_t * d), (d))
FB_LAZY_VOID(L, yaml_parser_delete, (yaml_parser_t * p), (p))
FB_LAZY_FN(L, int, yaml_parser_initialize, (yaml_parser_t * p), (p))
FB_LAZY_FN(L, int, yaml_parser_load, (yaml_parser_t * p, yaml_document_t *d), (p, d))
FB_LAZY_VOID(L, yaml_parser_set_input_string,
             (yaml_parser_t * p, const unsigned char *input, size_t size), (p, input, size))
