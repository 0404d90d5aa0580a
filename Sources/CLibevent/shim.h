#ifndef SWETCD_CLIBEVENT_SHIM_H
#define SWETCD_CLIBEVENT_SHIM_H
// Every shim sees the C library with the same feature macros (libevent's
// headers define _GNU_SOURCE, which changes struct layouts such as fd_set);
// otherwise two modules disagree about one type and cannot be imported together.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <event2/util.h>
#endif
