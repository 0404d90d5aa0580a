#ifndef SWETCD_CMIMALLOC_SHIM_H
#define SWETCD_CMIMALLOC_SHIM_H
#include <mimalloc.h>
#endif
