// Chunk checksums of the checkpoint format: XXH3-64 with seed 0, equal bit
// for bit to xxhash.xxh3_64_intdigest.  Chunks are large (1 MiB by default),
// so their hash is XXH3's long loop, which faultkit/common/xxh3.h runs with
// the fastest vector kernel this CPU has (a save hashes every byte it writes).
#pragma once

#include <cstddef>
#include <cstdint>

#include "faultkit/common/xxh3.h"

namespace faultkit {
namespace codec {

// XXH3-64 (seed 0) of a chunk.
inline uint64_t chunk_hash(const void* data, size_t len) noexcept { return xxh3_64(data, len, 0); }

}  // namespace codec
}  // namespace faultkit
