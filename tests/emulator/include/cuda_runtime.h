/* Device emulator (tests only): the drop-in cuda_runtime.h. See tests/emulator/README.md. */
#ifndef GPURNN_EMU_CUDA_RUNTIME_H
#define GPURNN_EMU_CUDA_RUNTIME_H

#include "cuda_runtime_api.h"
#include "gpurnn_emu/device.h"
#include "gpurnn_emu/launch.h"

#endif
