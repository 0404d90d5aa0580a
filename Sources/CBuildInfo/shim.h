#ifndef SWETCD_CBUILDINFO_SHIM_H
#define SWETCD_CBUILDINFO_SHIM_H
/* What a build was made from. scripts/package.sh defines these with
 * -Xcc -D...; any other build is a development build. (Functions, not
 * macros for Swift to import: a macro given on the command line is not
 * part of the module, so Swift would not see it.) */
#ifndef SWETCD_BUILD_VERSION
#define SWETCD_BUILD_VERSION "0.0.0-dev"
#endif
#ifndef SWETCD_BUILD_GIT_SHA
#define SWETCD_BUILD_GIT_SHA "unknown"
#endif
static inline const char *swetcd_build_version(void) { return SWETCD_BUILD_VERSION; }
static inline const char *swetcd_build_git_sha(void) { return SWETCD_BUILD_GIT_SHA; }
#endif
