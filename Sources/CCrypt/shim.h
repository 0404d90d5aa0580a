// libxcrypt: bcrypt password hashes, as etcd keeps them.
#include <crypt.h>
