/* CRC-64/XZ (the check used by xz and by libgpurnn's checkpoint files): the ECMA-182
 * polynomial 0x42F0E1EBA9EA3693, reflected, initial value and final XOR all ones.
 * The CRC of the nine bytes "123456789" is 0x995DC9BBDF1939FA. */
#ifndef GPURNN_CRC64_H
#define GPURNN_CRC64_H

#include <stddef.h>
#include <stdint.h>

/* Returns the CRC of the bytes fed so far followed by data[0..n). Start with crc = 0;
 * chaining is exact: update(update(0, a), b) equals the CRC of a followed by b, so a
 * file can be checked in chunks of any size. data may be NULL when n is 0. */
uint64_t gpurnn_crc64_update(uint64_t crc, const void *data, size_t n);

#endif
