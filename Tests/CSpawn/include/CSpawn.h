#ifndef SWETCD_CSPAWN_H
#define SWETCD_CSPAWN_H
#include <spawn.h>

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34): every descriptor
/// from `lowfd` up is closed in the child. Declared under _GNU_SOURCE only,
/// which Swift's Glibc module is not built with, hence this wrapper.
int cspawn_add_close_from(posix_spawn_file_actions_t *actions, int lowfd);

/// pipe2(fds, O_CLOEXEC), GNU too.
int cspawn_pipe_cloexec(int fds[2]);

#endif
