/* Helpers for the emulator's self-tests. */
#ifndef GPURNN_EMU_TEST_SUPPORT_H
#define GPURNN_EMU_TEST_SUPPORT_H

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "gpurnn_emu/control.h"

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call)) << #call

/* Death tests re-run the test binary ("threadsafe"), since the emulator has threads'
 * state (fiber pools, locks) a fork would copy half-way. */
struct EmulatorTest : ::testing::Test {
    void SetUp() override
    {
        GTEST_FLAG_SET(death_test_style, "threadsafe");
        gpurnn_emu::set_schedule(gpurnn_emu::Schedule::kShuffle, 1);
    }
};

#endif
