#ifndef SWETCD_CNGHTTP2_SHIM_H
#define SWETCD_CNGHTTP2_SHIM_H
// Every shim sees the C library with the same feature macros (libevent's
// headers define _GNU_SOURCE, which changes struct layouts such as fd_set);
// otherwise two modules disagree about one type and cannot be imported together.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <nghttp2/nghttp2.h>
#endif
