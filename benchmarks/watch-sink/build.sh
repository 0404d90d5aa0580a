#!/bin/sh
# Builds watch_sink next to its source (needs a C compiler: apt-get install -y gcc).
set -e
cd "$(dirname "$0")"
cc -O2 -Wall -Wextra -o watch_sink watch_sink.c
