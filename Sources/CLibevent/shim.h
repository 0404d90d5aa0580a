#ifndef SWETCD_CLIBEVENT_SHIM_H
#define SWETCD_CLIBEVENT_SHIM_H
// glibc's feature macros are fixed by the first libc header a translation
// unit includes. libevent's event-config.h defines _GNU_SOURCE, which would
// change struct layouts (fd_set) from what SwiftGlibc and the other C modules
// see, and clang refuses to import two modules that disagree on a type. So a
// libc header comes first, with the same feature macros as everywhere else.
#include <sys/types.h>
#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <event2/util.h>
#endif
