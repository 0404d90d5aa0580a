// Declarations only (include/fuzzer_driver.h); SwiftPM wants a source file.
#include "fuzzer_driver.h"
