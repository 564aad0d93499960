/* Device emulator (tests only): knobs for the emulator's own tests. Production code and
 * the backend never include this. The environment variables in README.md set the same. */
#ifndef GPURNN_EMU_CONTROL_H
#define GPURNN_EMU_CONTROL_H

#include <stddef.h>

namespace gpurnn_emu {

enum class Schedule { kForward, kReverse, kShuffle };

/* The order in which a block's threads run between barriers (and the order of blocks). */
void set_schedule(Schedule schedule, unsigned long long seed);
Schedule schedule();

/* Device memory capacity in bytes (GPURNN_EMU_DEVICE_MEMORY). */
void set_device_memory(size_t bytes);

} // namespace gpurnn_emu

#endif
